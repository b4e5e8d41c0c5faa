//! Both binaries start, answer health checks, list their API over reflection and stop cleanly.

use e2e::{RunningService, TestDatabase, nats::TestStream};
use tonic_reflection::pb::v1alpha::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn listed_services(service: &RunningService) -> anyhow::Result<Vec<String>> {
    let mut client = ServerReflectionClient::new(service.channel().await?);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses.message().await?.expect("one reflection response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => anyhow::bail!("unexpected reflection response {other:?}"),
    }
}

async fn check_serving(binary: &str) -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let stream = TestStream::new();
    // A short drain: the test's own connections stay open, as real clients' would.
    let mut env = vec![
        ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
        ("DATABASE_URL", database.url.clone()),
    ];
    env.extend(stream.relay_env());
    if binary == "query-svc" {
        // command-svc's relay creates the stream; query-svc is not ready without it.
        stream.create().await?;
    }
    let service = RunningService::start(binary, env).await?;
    service
        .wait_until_serving("", std::time::Duration::from_secs(20))
        .await?;

    let services = listed_services(&service).await?;
    for expected in [
        "pizzeria.v1.CommandService",
        "pizzeria.v1.EventLogService",
        "pizzeria.v1.QueryService",
        "pizzeria.v1.ProjectionAdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{binary} lists {services:?}, not {expected}"
        );
    }

    assert!(service.terminate()?, "{binary} exits cleanly on SIGTERM");
    database.drop_database().await
}

#[tokio::test]
async fn command_svc_serves_health_and_reflection() -> anyhow::Result<()> {
    check_serving("command-svc").await
}

#[tokio::test]
async fn query_svc_serves_health_and_reflection() -> anyhow::Result<()> {
    check_serving("query-svc").await
}
