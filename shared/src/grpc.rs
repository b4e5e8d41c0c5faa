//! gRPC plumbing both servers share: health, reflection over every service, graceful serving.

use std::{future::Future, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use tonic_reflection::server::{
    Builder, Error,
    v1::{ServerReflection, ServerReflectionServer},
    v1alpha::{
        ServerReflection as ServerReflectionV1Alpha,
        ServerReflectionServer as ServerReflectionServerV1Alpha,
    },
};

fn builder() -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.BadRequest and friends: lets grpcurl print error details as JSON.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Reflection v1, for current gRPC tooling.
pub fn reflection_v1() -> Result<ServerReflectionServer<impl ServerReflection>, Error> {
    builder().build_v1()
}

/// Reflection v1alpha: grpcurl 1.8 (the PyPI build) speaks only this one.
pub fn reflection_v1alpha()
-> Result<ServerReflectionServerV1Alpha<impl ServerReflectionV1Alpha>, Error> {
    builder().build_v1alpha()
}

/// The health "service" that is SERVING for as long as the process serves gRPC at all: the
/// liveness probe, which must not fail (and restart the process) when a dependency is down.
pub const LIVENESS: &str = "liveness";

/// Health and reflection routes every server starts with; add the service's own to them.
/// The whole server (`""`) starts NOT_SERVING: the service reports SERVING once its
/// dependencies answer ([`crate::health::follow`]).
pub async fn base_routes() -> Result<(HealthReporter, Routes), Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(LIVENESS, tonic_health::ServingStatus::Serving)
        .await;
    let routes = Routes::new(health)
        .add_service(reflection_v1()?)
        .add_service(reflection_v1alpha()?);
    Ok((reporter, routes))
}

/// Serves `routes` on `listener` until `shutdown` resolves; then reports NOT_SERVING (so load
/// balancers stop sending work), stops accepting, and lets in-flight calls finish for up to
/// `drain_timeout`. Idle client connections would otherwise hold the server open forever.
/// Every call is bounded by `request_timeout` and passes `admission` first.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    admission: crate::admission::AdmissionLayer,
    reporter: HealthReporter,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
    request_timeout: Duration,
) -> Result<(), tonic::transport::Error> {
    let stop_accepting = CancellationToken::new();
    // `timeout` bounds every call; a client's shorter grpc-timeout deadline takes precedence.
    let server = tonic::transport::Server::builder()
        .timeout(request_timeout)
        // Outermost, so refusals at the gate are traced and counted too.
        .layer(crate::telemetry::GrpcTelemetryLayer)
        .layer(admission)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            stop_accepting.clone().cancelled_owned(),
        );
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    stop_accepting.cancel();
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?drain_timeout,
                "calls still open after the drain timeout; stopping anyway"
            );
            Ok(())
        }
    }
}

/// Largest response message either service sends (a ReadStream page, a long timeline). Pages
/// are bounded far below it; this is the backstop, answered OUT_OF_RANGE rather than sent.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// One bad field of a request, reported in a `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message, e.g. `items[2].unit_price_cents`.
    pub field: String,
    /// What is wrong with the value, e.g. `must be between 1 and 10000000`.
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Most field violations one error names. Status and details travel in HTTP/2 headers, which
/// clients cap (16 KiB by default): an order of 200 bad lines would otherwise come back as a
/// stream reset the client reports as INTERNAL (the fuzz test found it).
const MAX_VIOLATIONS: usize = 10;

/// `INVALID_ARGUMENT` listing the bad fields as `google.rpc.BadRequest` field violations (the
/// first [`MAX_VIOLATIONS`], and how many more there are).
pub fn invalid(mut violations: Vec<FieldViolation>) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    if violations.len() > MAX_VIOLATIONS {
        let more = violations.len() - MAX_VIOLATIONS;
        violations.truncate(MAX_VIOLATIONS);
        violations.push(FieldViolation::new("…", format!("and {more} more")));
    }
    let summary = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field, v.description);
    }
    tonic::Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("invalid request: {summary}"),
        details,
    )
}

/// The caller the admission gate verified. UNAUTHENTICATED if there is none (a server built
/// without the gate): fail closed.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&crate::auth::Caller, tonic::Status> {
    request
        .extensions()
        .get::<crate::auth::Caller>()
        .ok_or_else(|| tonic::Status::unauthenticated("no verified caller"))
}

/// The tenant the call acts for: the verified token's, or `x-tenant-id` with authentication off.
pub fn tenant<T>(request: &tonic::Request<T>) -> Result<crate::values::TenantId, tonic::Status> {
    caller(request)?.tenant()
}

/// Asks the server listening on `addr` (an unspecified address means this host) for the health
/// of the whole server: true if SERVING. Containers use it as their healthcheck (`--probe`),
/// since the runtime image has no shell or grpcurl.
pub async fn probe(addr: std::net::SocketAddr) -> bool {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let check = async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(response.into_inner().status == ServingStatus::Serving as i32)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), check).await,
        Ok(Some(true))
    )
}
