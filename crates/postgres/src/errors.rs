use orders_domain::RepositoryError;

/// Maps the driver's error to the domain's: a data or integrity error
/// (SQLSTATE classes 22 and 23) is the data's fault and will not heal; the
/// rest (connection lost, server shutting down, timeouts, ...) may.
pub(crate) fn from_pg(err: tokio_postgres::Error) -> RepositoryError {
    match err.code().map(|c| c.code()) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => {
            let detail = err
                .as_db_error()
                .map(|db| db.message().to_owned())
                .unwrap_or_else(|| err.to_string());
            RepositoryError::Refused(format!("{detail} (SQLSTATE {code})"))
        }
        _ => RepositoryError::Unavailable(Box::new(err)),
    }
}

pub(crate) fn from_pool(err: deadpool_postgres::PoolError) -> RepositoryError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => from_pg(err),
        other => RepositoryError::Unavailable(Box::new(other)),
    }
}

/// A stored row that the domain would not accept: only possible if someone
/// wrote to the tables by hand, past the CHECK constraints.
pub(crate) fn corrupt(what: &str, why: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Refused(format!("stored {what} is invalid: {why}"))
}
