//! The open-file limit: every connection, pooled database connection and
//! broker connection is a file descriptor. With the usual soft limit of
//! 1024, 1,100 idle clients made `accept` fail and `/healthz` wait 10 s.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but HTTP clients: the database pools,
/// the broker, the listeners, logs, and a margin.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft open-file limit to the hard one; returns the limit now
/// in force (`None`: unlimited).
pub fn raise_open_files() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit");
                return limit.maximum;
            }
            Err(err) => {
                tracing::warn!(error = %err, limit = ?limit.current, "cannot raise the open-file limit");
            }
        }
    }
    limit.current
}

/// How many HTTP connections `requested` comes to under `open_files`
/// descriptors, and, if fewer, the warning to log.
pub fn connections_allowed(requested: usize, open_files: Option<u64>) -> (usize, Option<String>) {
    let Some(open_files) = open_files else {
        return (requested, None);
    };
    let room = open_files.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if requested <= room {
        (requested, None)
    } else {
        (
            room,
            Some(format!(
                "MAX_CONNECTIONS={requested} does not fit the open-file limit of {open_files} \\
                 ({RESERVED_DESCRIPTORS} kept for the database, the broker and the rest): \\
                 serving at most {room} connections. Raise the limit (ulimit -n, \\
                 systemd LimitNOFILE, compose ulimits) to serve more."
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_clamped_to_what_the_descriptors_carry() {
        assert_eq!(connections_allowed(10_000, Some(20_000)), (10_000, None));
        let (allowed, warning) = connections_allowed(10_000, Some(1_024));
        assert_eq!(allowed, 1_024 - 128);
        assert!(
            warning
                .expect("a warning")
                .contains("MAX_CONNECTIONS=10000")
        );
        assert_eq!(connections_allowed(10_000, None), (10_000, None));
        assert_eq!(connections_allowed(10, Some(100)).0, 1);
    }
}
