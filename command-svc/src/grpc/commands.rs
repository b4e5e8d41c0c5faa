//! The path every command rpc takes, whatever its bounded context: the caller's tenant, the
//! request converted (or every bad field reported), the command executed by the
//! [`CommandHandler`] with its idempotency key, expected version and metadata. Each context's
//! service turns the [`CommandOutcome`] into its own reply message.

use chrono::{DateTime, Utc};
use prost::Message;
use shared::{auth::Caller, envelope::EventMetadata, grpc::caller};
use tonic::{Request, Status};
use uuid::Uuid;

use super::{
    fields::{Converted, FieldViolation},
    status::invalid,
};
use crate::eventsourcing::{
    Aggregate,
    handler::{CommandContext, CommandHandler, CommandOutcome},
};

/// A converter from a request to a domain command, given the server's current time.
pub type Converter<R, Id, C> =
    fn(&R, DateTime<Utc>) -> Result<Converted<Id, C>, Vec<FieldViolation>>;

/// Runs converted commands over a [`CommandHandler`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Commands {
    handler: CommandHandler,
}

impl Commands {
    pub fn new(handler: CommandHandler) -> Self {
        Self { handler }
    }

    /// The handler, for checks a command needs before it runs (another aggregate's state).
    pub fn handler(&self) -> &CommandHandler {
        &self.handler
    }

    /// The whole path of a single-aggregate command: tenant, convert, execute.
    pub async fn command<A, Id, R>(
        &self,
        request: Request<R>,
        rpc: &'static str,
        convert: Converter<R, Id, A::Command>,
    ) -> Result<CommandOutcome, Status>
    where
        A: Aggregate,
        Id: Into<Uuid>,
        R: Message,
    {
        let caller = caller(&request)?.clone();
        // A token that names no tenant is refused before its request is looked at.
        caller.tenant()?;
        let request = request.into_inner();
        let converted = checked(convert(&request, Utc::now()))?;
        self.run::<A, _, _>(rpc, &caller, &request, converted).await
    }

    /// Executes a converted command for `caller`. `request` is what the idempotency key is
    /// checked against: the same key with another request is refused.
    pub async fn run<A, Id, R>(
        &self,
        rpc: &'static str,
        caller: &Caller,
        request: &R,
        converted: Converted<Id, A::Command>,
    ) -> Result<CommandOutcome, Status>
    where
        A: Aggregate,
        Id: Into<Uuid>,
        R: Message,
    {
        let encoded = request.encode_to_vec();
        let ctx = CommandContext {
            tenant: caller.tenant()?,
            command_id: converted.options.command_id,
            expected_version: converted.options.expected_version,
            rpc,
            request: &encoded,
            metadata: EventMetadata {
                command_id: converted.options.command_id.map(|c| c.as_uuid()),
                // The verified token's subject ("anonymous" with authentication off).
                actor: Some(caller.subject.clone()),
                // The call's span: the relay's publish span and the projection continue it.
                traceparent: shared::trace_context::current_call().map(|t| t.to_string()),
                ..EventMetadata::default()
            },
        };
        Ok(self
            .handler
            .execute::<A>(&ctx, converted.id.into(), &converted.command)
            .await?)
    }
}

/// The converted request, or INVALID_ARGUMENT with every violation.
pub fn checked<T>(result: Result<T, Vec<FieldViolation>>) -> Result<T, Status> {
    result.map_err(invalid)
}
