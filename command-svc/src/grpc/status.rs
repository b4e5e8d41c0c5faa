//! The one mapping from application errors to gRPC statuses. No catch-all arm: a new error
//! variant must be mapped here deliberately. Messages never carry SQL or connection strings.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::convert::FieldViolation;
use crate::app::AppError;

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

/// `INVALID_ARGUMENT` listing every bad field as a `google.rpc.BadRequest` field violation.
pub fn invalid(violations: Vec<FieldViolation>) -> Status {
    let summary = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field, v.description);
    }
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {summary}"),
        details,
    )
}
