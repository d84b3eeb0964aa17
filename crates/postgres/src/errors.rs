use orders_domain::RepositoryError;
use tokio_postgres::error::SqlState;

/// Maps the driver's error to the domain's: a data or integrity error
/// (SQLSTATE classes 22 and 23) is the data's fault and will not heal; the
/// rest (connection lost, server shutting down, timeouts, ...) may.
pub(crate) fn from_pg(err: tokio_postgres::Error) -> RepositoryError {
    match err.code().map(|c| c.code()) {
        // 25006 read_only_sql_transaction: the connection's server no
        // longer takes writes (the old primary, fenced or demoted in a
        // fail-over). Transient: the pool drops that connection before
        // handing it out again (`connect::writable_only`), and a new one
        // reaches the new primary.
        Some(code) if code == SqlState::READ_ONLY_SQL_TRANSACTION.code() => {
            RepositoryError::Unavailable(Box::new(err))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a statement gets from the server at `url` for `sql`.
    async fn error_of(sql: &str) -> tokio_postgres::Error {
        let url = orders_testkit::admin_database_url();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
        tokio::spawn(connection);
        client.batch_execute(sql).await.expect_err(sql)
    }

    #[tokio::test]
    async fn a_write_on_a_read_only_server_is_transient() {
        // What a write meets on a standby, or on a primary being fenced.
        let err = error_of("BEGIN READ ONLY; CREATE TABLE never_created (x int)").await;
        assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));

        assert!(matches!(from_pg(err), RepositoryError::Unavailable(_)));
    }

    #[tokio::test]
    async fn bad_data_is_refused_for_good() {
        let err = error_of("SELECT 1 / 0").await;

        assert!(matches!(from_pg(err), RepositoryError::Refused(_)));
    }
}
