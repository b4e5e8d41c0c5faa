//! gRPC adapters of query-svc.

pub mod admin_service;
pub mod consistency;
pub mod query_service;
pub mod requests;

use tonic::Status;

/// A database error as the client sees it: retryable when the database is unreachable, without
/// SQL or connection details either way (those go to the log).
pub(crate) fn db(error: sqlx::Error) -> Status {
    tracing::error!(%error, "read database error");
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            Status::unavailable("read database unavailable; retry")
        }
        _ => Status::internal("internal error"),
    }
}
