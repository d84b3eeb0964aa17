//! Why a message is not an order, and the reasons a message is rejected.

use std::fmt;

/// The most field problems one rejection lists; a message with more says
/// how many it left out.
pub const MAX_PROBLEMS: usize = 20;

/// Why a message is not an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The body is larger than the configured limit; it was never parsed.
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The body is not valid UTF-8 JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// An object names the same key twice: readers that take the first and
    /// readers that take the last would see different orders.
    #[error("{}duplicate key {key:?}", at_path(path))]
    DuplicateKey { path: String, key: String },
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// Fields are missing or wrong: each one named, at most
    /// [`MAX_PROBLEMS`] of them.
    #[error("{0}")]
    Fields(FieldProblems),
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// One bad field: where (`payment.amount`, `items[2].sale`) and what is
/// wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub path: String,
    pub problem: String,
}

/// The bad fields of one message, in the order the decoder met them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblems {
    pub listed: Vec<FieldProblem>,
    /// Problems found beyond [`MAX_PROBLEMS`], not listed.
    pub more: usize,
}

impl fmt::Display for FieldProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.listed.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.path, p.problem)?;
        }
        if self.more > 0 {
            write!(f, "; and {} more", self.more)?;
        }
        Ok(())
    }
}

/// A short, stable name for each kind of rejection: a metrics label and the
/// `reason` column of `rejected_messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooLarge,
    InvalidJson,
    DuplicateKey,
    NotAnObject,
    InvalidField,
    /// Same uid as a stored order, different content.
    Conflict,
    /// The database refused the order as a data error (a constraint the
    /// validation did not foresee). Retrying cannot help.
    Refused,
    /// The broker gave up delivering the message (its deliveries ran out)
    /// before the service could settle it.
    Undeliverable,
    /// The service panicked while handling this message (a bug): the
    /// panic is kept to the message, whose row says where it happened.
    Internal,
    /// The order was erased on request (`order-service erase`): a message
    /// that would bring it back is refused, and its row keeps neither its
    /// bytes nor its headers.
    Erased,
}

impl RejectReason {
    /// Every reason, for metrics that start at zero.
    pub const ALL: [RejectReason; 10] = [
        Self::TooLarge,
        Self::InvalidJson,
        Self::DuplicateKey,
        Self::NotAnObject,
        Self::InvalidField,
        Self::Conflict,
        Self::Refused,
        Self::Undeliverable,
        Self::Internal,
        Self::Erased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::InvalidJson => "invalid_json",
            Self::DuplicateKey => "duplicate_key",
            Self::NotAnObject => "not_an_object",
            Self::InvalidField => "invalid_field",
            Self::Conflict => "conflict",
            Self::Refused => "refused",
            Self::Undeliverable => "undeliverable",
            Self::Internal => "internal",
            Self::Erased => "erased",
        }
    }

    /// The reason named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ValidationError {
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::TooLarge { .. } => RejectReason::TooLarge,
            Self::Json(_) => RejectReason::InvalidJson,
            Self::DuplicateKey { .. } => RejectReason::DuplicateKey,
            Self::NotAnObject(_) => RejectReason::NotAnObject,
            Self::Fields(_) => RejectReason::InvalidField,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_by_name() {
        for reason in RejectReason::ALL {
            assert_eq!(RejectReason::from_name(reason.as_str()), Some(reason));
        }
        assert_eq!(RejectReason::from_name("nope"), None);
    }

    #[test]
    fn problems_are_listed_once_each_with_a_count_of_the_rest() {
        let problem = |path: &str| FieldProblem {
            path: path.into(),
            problem: "missing".into(),
        };
        let problems = FieldProblems {
            listed: vec![problem("date_created"), problem("items")],
            more: 3,
        };
        assert_eq!(
            ValidationError::Fields(problems).to_string(),
            "date_created: missing; items: missing; and 3 more"
        );
        let dup = ValidationError::DuplicateKey {
            path: "payment".into(),
            key: "amount".into(),
        };
        assert_eq!(dup.to_string(), "payment: duplicate key \"amount\"");
    }
}
