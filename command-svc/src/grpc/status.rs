//! The one mapping from application errors to gRPC statuses. No catch-all arm: a new error
//! variant must be mapped here deliberately. Messages never carry SQL or connection strings.

use tonic::Status;

use crate::eventsourcing::handler::AppError;

impl From<AppError> for Status {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Rejected {
                message,
                not_found: true,
            } => Status::not_found(message),
            AppError::Rejected {
                message,
                not_found: false,
            } => Status::failed_precondition(message),
            AppError::Conflict { expected, actual } => Status::aborted(format!(
                "version conflict: expected version {expected}, actual version {actual}"
            )),
            AppError::CommandIdReused => Status::invalid_argument(
                "command id reused: this command_id was used with a different command",
            ),
            AppError::Unavailable => {
                Status::unavailable("database unavailable; retry with the same command_id")
            }
            AppError::Internal => Status::internal("internal error"),
        }
    }
}

pub use shared::grpc::invalid;
