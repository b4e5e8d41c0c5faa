//! `pizzeria.v1.CommandService`: thin handlers that convert, execute and reply.

use chrono::Utc;
use prost::Message;
use shared::{
    grpc::caller,
    proto::v1::{self as pb, command_service_server::CommandService},
    values::{CustomerId, TenantId},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    commands::{Commands, Converter, checked},
    convert,
};
use crate::{
    domain::{customer::Customer, order::Order},
    eventsourcing::{
        Aggregate,
        handler::{AppError, CommandOutcome},
    },
};

/// Serves CommandService over the command path ([`Commands`]).
#[derive(Debug, Clone)]
pub struct CommandApi {
    commands: Commands,
}

impl CommandApi {
    pub fn new(commands: Commands) -> Self {
        Self { commands }
    }

    async fn command<A, Id, R>(
        &self,
        request: Request<R>,
        rpc: &'static str,
        convert: Converter<R, Id, A::Command>,
    ) -> Result<Response<pb::CommandReply>, Status>
    where
        A: Aggregate,
        Id: Into<Uuid>,
        R: Message,
    {
        let outcome = self
            .commands
            .command::<A, _, _>(request, rpc, convert)
            .await?;
        Ok(reply(outcome))
    }

    /// PlaceOrder needs a registered customer: a cross-aggregate check done here, before deciding.
    async fn require_customer(&self, tenant: TenantId, id: CustomerId) -> Result<(), Status> {
        let (customer, _) = self
            .commands
            .handler()
            .load::<Customer>(tenant, id.as_uuid())
            .await?;
        if customer.profile.is_none() {
            return Err(AppError::Rejected {
                message: format!("customer {id} is not registered"),
                not_found: false,
            }
            .into());
        }
        Ok(())
    }
}

fn reply(outcome: CommandOutcome) -> Response<pb::CommandReply> {
    Response::new(pb::CommandReply {
        aggregate_id: outcome.aggregate_id.to_string(),
        version: outcome.version,
        position: outcome.position,
        replayed: outcome.replayed,
        events_appended: outcome.events_appended,
    })
}

#[tonic::async_trait]
impl CommandService for CommandApi {
    async fn register_customer(
        &self,
        request: Request<pb::RegisterCustomerRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Customer, _, _>(request, "RegisterCustomer", convert::register_customer)
            .await
    }
    async fn change_customer_email(
        &self,
        request: Request<pb::ChangeCustomerEmailRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Customer, _, _>(
            request,
            "ChangeCustomerEmail",
            convert::change_customer_email,
        )
        .await
    }
    async fn rename_customer(
        &self,
        request: Request<pb::RenameCustomerRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Customer, _, _>(request, "RenameCustomer", convert::rename_customer)
            .await
    }

    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = caller(&request)?.clone();
        let tenant = caller.tenant()?;
        let request = request.into_inner();
        let (converted, customer_id) = checked(convert::place_order(&request, Utc::now()))?;
        self.require_customer(tenant, customer_id).await?;
        let outcome = self
            .commands
            .run::<Order, _, _>("PlaceOrder", &caller, &request, converted)
            .await?;
        Ok(reply(outcome))
    }

    async fn confirm_order(
        &self,
        request: Request<pb::ConfirmOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Order, _, _>(request, "ConfirmOrder", convert::confirm_order)
            .await
    }
    async fn process_payment(
        &self,
        request: Request<pb::ProcessPaymentRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Order, _, _>(request, "ProcessPayment", convert::process_payment)
            .await
    }
    async fn apply_discount(
        &self,
        request: Request<pb::ApplyDiscountRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Order, _, _>(request, "ApplyDiscount", convert::apply_discount)
            .await
    }
    async fn mark_order_ready(
        &self,
        request: Request<pb::MarkOrderReadyRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Order, _, _>(request, "MarkOrderReady", convert::mark_order_ready)
            .await
    }
    async fn send_out_for_delivery(
        &self,
        request: Request<pb::SendOutForDeliveryRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Order, _, _>(
            request,
            "SendOutForDelivery",
            convert::send_out_for_delivery,
        )
        .await
    }
    async fn mark_order_delivered(
        &self,
        request: Request<pb::MarkOrderDeliveredRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Order, _, _>(request, "MarkOrderDelivered", convert::mark_order_delivered)
            .await
    }
    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        self.command::<Order, _, _>(request, "CancelOrder", convert::cancel_order)
            .await
    }
}
