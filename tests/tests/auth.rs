//! Authentication over the wire: both binaries with a public key, tokens minted here with the
//! matching private key (shared/testdata, a test-only key pair).
//!
//! The refusals of every kind of bad token are unit-tested in `shared::auth`; this checks that
//! the services apply them to every service, take the tenant only from the token, gate the admin
//! and log-reader rpcs by role, and that query-svc's own service token carries its rebuild.

use std::{path::PathBuf, time::Duration};

use e2e::{RunningService, TestDatabase, nats::TestStream};
use shared::{
    auth::{ADMIN, EVENT_READER, TokenClaims},
    proto::v1::{
        self as pb, command_service_client::CommandServiceClient,
        event_log_service_client::EventLogServiceClient,
        projection_admin_service_client::ProjectionAdminServiceClient,
        query_service_client::QueryServiceClient,
    },
    values::TenantId,
};
use tonic::{Code, Request, transport::Channel};

const PRIVATE_KEY: &[u8] = include_bytes!("../../shared/testdata/test-ed25519.pem");
const OTHER_PRIVATE_KEY: &[u8] = include_bytes!("../../shared/testdata/other-ed25519.pem");

fn public_key_file() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/test-ed25519.pub.pem"
    )
    .to_owned()
}

fn token(key: &[u8], tenant: Option<TenantId>, roles: &[&str], ttl_secs: i64) -> String {
    let mut claims = TokenClaims::new(
        "auth-test",
        "pizzeria",
        "pizzeria",
        tenant,
        roles,
        Duration::from_secs(600),
    );
    claims.exp = claims.iat.saturating_add_signed(ttl_secs);
    shared::auth::mint(key, &claims).expect("the test key signs")
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

fn margherita() -> pb::OrderItem {
    pb::OrderItem {
        name: "Margherita".into(),
        size: pb::PizzaSize::Large as i32,
        quantity: 1,
        unit_price_cents: 1299,
    }
}

fn place(order: &str, customer: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        order_id: order.into(),
        customer_id: customer.into(),
        items: vec![margherita()],
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(reply) => panic!("expected a refusal, got {reply:?}"),
        Err(status) => status.code(),
    }
}

struct Services {
    write_db: TestDatabase,
    read_db: TestDatabase,
    _stream: TestStream,
    command_svc: RunningService,
    query_svc: RunningService,
    token_file: PathBuf,
}

impl Services {
    async fn start() -> anyhow::Result<Self> {
        let write_db = TestDatabase::create().await?;
        let read_db = TestDatabase::create().await?;
        let stream = TestStream::new();
        let auth = [
            ("AUTH_DISABLED", "false".to_owned()),
            ("AUTH_PUBLIC_KEY_FILE", public_key_file()),
            ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
        ];
        let mut env = vec![
            ("DATABASE_URL", write_db.url.clone()),
            ("RELAY_POLL_INTERVAL", "50ms".to_owned()),
        ];
        env.extend(auth.clone());
        env.extend(stream.relay_env());
        let command_svc = RunningService::start_serving("command-svc", env).await?;

        // query-svc's own token: reads every tenant's log, acts for none.
        let token_file =
            std::env::temp_dir().join(format!("pizzeria-auth-{}.jwt", uuid::Uuid::now_v7()));
        std::fs::write(&token_file, token(PRIVATE_KEY, None, &[EVENT_READER], 600))?;
        let mut env = vec![
            ("DATABASE_URL", read_db.url.clone()),
            ("COMMAND_SVC_URL", format!("http://{}", command_svc.addr)),
            (
                "COMMAND_SVC_TOKEN_FILE",
                token_file.to_string_lossy().into_owned(),
            ),
        ];
        env.extend(auth);
        env.extend(stream.relay_env());
        let query_svc = RunningService::start_serving("query-svc", env).await?;
        Ok(Self {
            write_db,
            read_db,
            _stream: stream,
            command_svc,
            query_svc,
            token_file,
        })
    }

    async fn finish(self) -> anyhow::Result<()> {
        drop(self.command_svc);
        drop(self.query_svc);
        std::fs::remove_file(&self.token_file)?;
        self.write_db.drop_database().await?;
        self.read_db.drop_database().await
    }
}

#[tokio::test]
async fn tokens_decide_who_may_call_and_for_which_tenant() -> anyhow::Result<()> {
    let services = Services::start().await?;
    let command_channel: Channel = services.command_svc.channel().await?;
    let query_channel: Channel = services.query_svc.channel().await?;
    let mut commands = CommandServiceClient::new(command_channel.clone());
    let mut event_log = EventLogServiceClient::new(command_channel);
    let mut queries = QueryServiceClient::new(query_channel.clone());
    let mut admin = ProjectionAdminServiceClient::new(query_channel);

    let tenant_a = TenantId::parse(&uuid::Uuid::now_v7().to_string())?;
    let tenant_b = TenantId::parse(&uuid::Uuid::now_v7().to_string())?;
    let alice = token(PRIVATE_KEY, Some(tenant_a), &[], 600);
    let bob = token(PRIVATE_KEY, Some(tenant_b), &[], 600);
    let operator = token(PRIVATE_KEY, None, &[ADMIN], 600);
    let customer = uuid::Uuid::now_v7().to_string();
    let refused_order = uuid::Uuid::now_v7().to_string();

    // No token, an expired one, one signed by another key: UNAUTHENTICATED, nothing written.
    let expired = token(PRIVATE_KEY, Some(tenant_a), &[], -3600);
    let forged = token(OTHER_PRIVATE_KEY, Some(tenant_a), &[ADMIN], 600);
    for bad in [None, Some(expired.as_str()), Some(forged.as_str())] {
        let result = commands
            .place_order(with_token(place(&refused_order, &customer), bad))
            .await;
        assert_eq!(code(result), Code::Unauthenticated, "PlaceOrder, {bad:?}");
        let result = queries
            .get_order(with_token(
                pb::GetOrderRequest {
                    order_id: refused_order.clone(),
                    ..Default::default()
                },
                bad,
            ))
            .await;
        assert_eq!(code(result), Code::Unauthenticated, "GetOrder");
        let result = admin
            .list_projections(with_token(pb::ListProjectionsRequest::default(), bad))
            .await;
        assert_eq!(code(result), Code::Unauthenticated, "ListProjections");
    }
    // Health needs no token (orchestrators have none).
    services
        .command_svc
        .wait_until_serving("", Duration::from_secs(1))
        .await?;

    // Alice's order lands in her tenant whatever x-tenant-id says.
    commands
        .register_customer(with_token(
            pb::RegisterCustomerRequest {
                customer_id: customer.clone(),
                name: "Ada".into(),
                email: "ada@example.com".into(),
                ..Default::default()
            },
            Some(&alice),
        ))
        .await?;
    let order = uuid::Uuid::now_v7().to_string();
    let mut request = with_token(place(&order, &customer), Some(&alice));
    request
        .metadata_mut()
        .insert(shared::auth::TENANT_HEADER, tenant_b.to_string().parse()?);
    let placed = commands.place_order(request).await?.into_inner();
    // The event records who placed it: the token's subject.
    let events = event_log
        .read_stream(with_token(
            pb::ReadStreamRequest {
                aggregate_type: "order".into(),
                aggregate_id: order.clone(),
                ..Default::default()
            },
            Some(&alice),
        ))
        .await?
        .into_inner()
        .events;
    let actors: Vec<&str> = events
        .iter()
        .map(|e| e.metadata.as_ref().map_or("", |m| m.actor.as_str()))
        .collect();
    assert_eq!(actors, ["auth-test"]);

    let get = |token: &str| {
        with_token(
            pb::GetOrderRequest {
                order_id: order.clone(),
                min_position: placed.position,
            },
            Some(token),
        )
    };
    let seen = queries.get_order(get(&alice)).await?.into_inner();
    assert_eq!(seen.order_id, order);
    // Bob (another tenant) does not see it, and cannot change it.
    assert_eq!(code(queries.get_order(get(&bob)).await), Code::NotFound);
    let result = commands
        .cancel_order(with_token(
            pb::CancelOrderRequest {
                order_id: order.clone(),
                reason: "not mine".into(),
                ..Default::default()
            },
            Some(&bob),
        ))
        .await;
    assert_eq!(code(result), Code::NotFound, "another tenant's order");

    // Roles: a tenant token may not administer or read the whole log; a service token (no
    // tenant) may not act for a tenant.
    let result = admin
        .list_projections(with_token(
            pb::ListProjectionsRequest::default(),
            Some(&alice),
        ))
        .await;
    assert_eq!(
        code(result),
        Code::PermissionDenied,
        "ListProjections as a tenant"
    );
    let result = event_log
        .read_all(with_token(pb::ReadAllRequest::default(), Some(&alice)))
        .await;
    assert_eq!(code(result), Code::PermissionDenied, "ReadAll as a tenant");
    let result = commands
        .place_order(with_token(
            place(&refused_order, &customer),
            Some(&operator),
        ))
        .await;
    assert_eq!(
        code(result),
        Code::PermissionDenied,
        "PlaceOrder without a tenant"
    );

    // Nothing the refused calls carried was written.
    let stream = event_log
        .read_stream(with_token(
            pb::ReadStreamRequest {
                aggregate_type: "order".into(),
                aggregate_id: refused_order.clone(),
                ..Default::default()
            },
            Some(&alice),
        ))
        .await?
        .into_inner();
    assert!(
        stream.events.is_empty(),
        "refused PlaceOrder wrote {stream:?}"
    );

    // The operator rebuilds: query-svc reads the whole log from command-svc with its own
    // service token, and the rebuilt read model still has Alice's order.
    let started = admin
        .rebuild_projection(with_token(
            pb::RebuildProjectionRequest {
                name: "read_model".into(),
            },
            Some(&operator),
        ))
        .await?
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let projections = admin
            .list_projections(with_token(
                pb::ListProjectionsRequest::default(),
                Some(&operator),
            ))
            .await?
            .into_inner();
        let done = projections
            .projections
            .iter()
            .any(|p| p.generation == started.generation && p.rebuild.is_none());
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rebuild not done in 30 s: {projections:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = queries.get_order(get(&alice)).await?.into_inner();
    assert_eq!(seen.order_id, order);

    services.finish().await
}
