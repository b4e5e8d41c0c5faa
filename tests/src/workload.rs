//! A load of commands of both contexts (orders, and every third round a training plan's life)
//! from several clients that behave as the API asks under failure:
//! every command carries a command id, and a retryable refusal (UNAVAILABLE, DEADLINE_EXCEEDED,
//! RESOURCE_EXHAUSTED, a broken connection) is retried with backoff and the same id until it
//! is acknowledged. What each client sent and got back goes into a [`Ledger`] the invariant
//! checker holds the system to.
//!
//! Beside the clients a session reader checks read-your-writes while the faults run: it keeps
//! the highest position any client was given (the usual session token) and reads the clients'
//! orders with it. An answer must show at least the version each order was acknowledged at;
//! a stale view or NOT_FOUND is a failure, UNAVAILABLE (not caught up in time) is allowed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use shared::proto::{
    training::v1::{
        self as training, training_plan_command_service_client::TrainingPlanCommandServiceClient,
    },
    v1::{
        self as pb, command_service_client::CommandServiceClient,
        query_service_client::QueryServiceClient,
    },
};
use tokio::task::JoinSet;
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};

/// Each attempt's deadline.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client keeps retrying one command before it reports it as never acknowledged.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// What the clients sent and what they were told.
#[derive(Debug, Default)]
pub struct Ledger {
    pub tenant: String,
    /// Every command id sent at least once.
    pub attempted: HashSet<String>,
    /// The reply of every acknowledged command, by command id.
    pub acknowledged: HashMap<String, pb::CommandReply>,
    /// Retryable refusals seen, by status code.
    pub refusals: BTreeMap<String, u64>,
    /// The longest time a refused attempt took to come back (bounded by the deadline).
    pub slowest_refusal: Duration,
    /// Outcomes no fault may cause: INTERNAL, a business refusal of a valid command, a command
    /// never acknowledged, a stale read with a session token. The checker fails on any.
    pub failures: Vec<String>,
    /// Reads with the session token that answered (each checked), and that were refused as
    /// not caught up in time or unreachable.
    pub session_reads: u64,
    pub session_reads_refused: u64,
}

impl Ledger {
    fn merge(&mut self, other: Ledger) {
        self.attempted.extend(other.attempted);
        self.acknowledged.extend(other.acknowledged);
        for (code, count) in other.refusals {
            *self.refusals.entry(code).or_default() += count;
        }
        self.slowest_refusal = self.slowest_refusal.max(other.slowest_refusal);
        self.failures.extend(other.failures);
        self.session_reads += other.session_reads;
        self.session_reads_refused += other.session_reads_refused;
    }

    /// Total retryable refusals.
    pub fn retries(&self) -> u64 {
        self.refusals.values().sum()
    }
}

/// Clients running until [`Workload::finish`].
#[derive(Debug)]
pub struct Workload {
    tenant: String,
    stop: tokio_util::sync::CancellationToken,
    clients: JoinSet<Ledger>,
    acknowledged: Arc<AtomicUsize>,
}

impl Workload {
    /// Starts `clients` clients, each taking orders of its own through their life, and the
    /// session reader.
    pub fn start(
        command_svc: Channel,
        queries: QueryServiceClient<Channel>,
        clients: usize,
    ) -> Self {
        let tenant = uuid::Uuid::now_v7().to_string();
        let stop = tokio_util::sync::CancellationToken::new();
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let session = Arc::new(Mutex::new(Session::default()));
        let mut set = JoinSet::new();
        for _ in 0..clients {
            let client = Client {
                commands: CommandServiceClient::new(command_svc.clone()),
                plans: TrainingPlanCommandServiceClient::new(command_svc.clone()),
                tenant: tenant.clone(),
                ledger: Ledger::default(),
                acknowledged: acknowledged.clone(),
                session: session.clone(),
            };
            set.spawn(client.run(stop.clone()));
        }
        let reader = SessionReader {
            queries,
            tenant: tenant.clone(),
            session,
        };
        set.spawn(reader.run(stop.clone()));
        Self {
            tenant,
            stop,
            clients: set,
            acknowledged,
        }
    }

    /// Commands acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until `more` further commands are acknowledged, or `timeout` passes (false then).
    pub async fn wait_for_progress(&self, more: usize, timeout: Duration) -> bool {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + timeout;
        while self.acknowledged() < target {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops the clients once each has its current command acknowledged; returns the ledger.
    pub async fn finish(mut self) -> Ledger {
        self.stop.cancel();
        let mut ledger = Ledger {
            tenant: self.tenant,
            ..Ledger::default()
        };
        while let Some(client) = self.clients.join_next().await {
            match client {
                Ok(client) => ledger.merge(client),
                Err(error) => ledger.failures.push(format!("client task failed: {error}")),
            }
        }
        ledger
    }
}

/// One command, built once so every retry sends the identical request.
#[derive(Debug, Clone)]
enum Command {
    Register(pb::RegisterCustomerRequest),
    Place(pb::PlaceOrderRequest),
    Confirm(pb::ConfirmOrderRequest),
    Pay(pb::ProcessPaymentRequest),
    Ready(pb::MarkOrderReadyRequest),
    OutForDelivery(pb::SendOutForDeliveryRequest),
    Delivered(pb::MarkOrderDeliveredRequest),
    Cancel(pb::CancelOrderRequest),
    CreatePlan(training::CreatePlanRequest),
    AddBlock(training::AddTrainingBlockRequest),
    Schedule(training::ScheduleWorkoutRequest),
    Complete(training::CompleteWorkoutRequest),
    Skip(training::SkipWorkoutRequest),
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The commands of one order's life: delivered, or (one in five) cancelled after placing.
fn order_life(customer: &str, sequence: usize) -> Vec<Command> {
    let order = new_id();
    let quantity = u32::try_from(sequence % 3 + 1).unwrap_or(1);
    let item = pb::OrderItem {
        name: "Margherita".into(),
        size: pb::PizzaSize::Large as i32,
        quantity,
        unit_price_cents: 1299,
    };
    let mut life = vec![Command::Place(pb::PlaceOrderRequest {
        command_id: new_id(),
        order_id: order.clone(),
        customer_id: customer.into(),
        items: vec![item],
        ..Default::default()
    })];
    if sequence % 5 == 4 {
        life.push(Command::Cancel(pb::CancelOrderRequest {
            command_id: new_id(),
            order_id: order,
            reason: "changed my mind".into(),
            ..Default::default()
        }));
        return life;
    }
    let in_an_hour = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    life.extend([
        Command::Confirm(pb::ConfirmOrderRequest {
            command_id: new_id(),
            order_id: order.clone(),
            estimated_delivery: Some(in_an_hour),
            ..Default::default()
        }),
        Command::Pay(pb::ProcessPaymentRequest {
            command_id: new_id(),
            order_id: order.clone(),
            method: pb::PaymentMethod::Card as i32,
            amount_cents: 1299 * i64::from(quantity),
            payment_reference: "ch_fault".into(),
            ..Default::default()
        }),
        Command::Ready(pb::MarkOrderReadyRequest {
            command_id: new_id(),
            order_id: order.clone(),
            ..Default::default()
        }),
        Command::OutForDelivery(pb::SendOutForDeliveryRequest {
            command_id: new_id(),
            order_id: order.clone(),
            driver_name: "Luigi".into(),
            ..Default::default()
        }),
        Command::Delivered(pb::MarkOrderDeliveredRequest {
            command_id: new_id(),
            order_id: order,
            ..Default::default()
        }),
    ]);
    life
}

/// The commands of one training plan's life: created with a block, two workouts scheduled,
/// one completed and one skipped.
fn plan_life(athlete: &str) -> Vec<Command> {
    let plan = new_id();
    let (first, second) = (new_id(), new_id());
    let workout = |workout_id: &str, on: &str| {
        Command::Schedule(training::ScheduleWorkoutRequest {
            command_id: new_id(),
            plan_id: plan.clone(),
            workout_id: workout_id.into(),
            on: on.into(),
            kind: training::WorkoutKind::Run as i32,
            planned: Some(training::Effort {
                minutes: 40,
                meters: 8000,
            }),
            ..Default::default()
        })
    };
    vec![
        Command::CreatePlan(training::CreatePlanRequest {
            command_id: new_id(),
            plan_id: plan.clone(),
            athlete_id: athlete.into(),
            name: "Fault plan".into(),
            starts_on: "2027-01-04".into(),
            ends_on: "2027-01-31".into(),
            ..Default::default()
        }),
        Command::AddBlock(training::AddTrainingBlockRequest {
            command_id: new_id(),
            plan_id: plan.clone(),
            block_id: new_id(),
            name: "Base".into(),
            starts_on: "2027-01-04".into(),
            ends_on: "2027-01-31".into(),
            ..Default::default()
        }),
        workout(&first, "2027-01-05"),
        workout(&second, "2027-01-07"),
        Command::Complete(training::CompleteWorkoutRequest {
            command_id: new_id(),
            plan_id: plan.clone(),
            workout_id: first,
            actual: Some(training::Effort {
                minutes: 42,
                meters: 8100,
            }),
            ..Default::default()
        }),
        Command::Skip(training::SkipWorkoutRequest {
            command_id: new_id(),
            plan_id: plan,
            workout_id: second,
            reason: "a fault".into(),
            ..Default::default()
        }),
    ]
}

/// What the clients have been told: the session token and each order's acknowledged version.
#[derive(Debug, Default)]
struct Session {
    token: u64,
    orders: Vec<(String, u64)>,
    index: HashMap<String, usize>,
}

impl Session {
    fn acknowledged(&mut self, order_id: &str, reply: &pb::CommandReply) {
        self.token = self.token.max(reply.position);
        match self.index.get(order_id) {
            Some(&at) => self.orders[at].1 = self.orders[at].1.max(reply.version),
            None => {
                self.index.insert(order_id.to_owned(), self.orders.len());
                self.orders.push((order_id.to_owned(), reply.version));
            }
        }
    }
}

/// Reads the clients' orders, one after the other, with the session token.
struct SessionReader {
    queries: QueryServiceClient<Channel>,
    tenant: String,
    session: Arc<Mutex<Session>>,
}

impl SessionReader {
    /// Reads until `stop`, then (the faults healed) until one more read answers, so every run
    /// checks at least one answer, and one after recovery.
    async fn run(mut self, stop: tokio_util::sync::CancellationToken) -> Ledger {
        let mut ledger = Ledger::default();
        let mut next = 0;
        while !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.read_one(&mut next, &mut ledger).await;
        }
        let deadline = Instant::now() + GIVE_UP_AFTER;
        while !self.read_one(&mut next, &mut ledger).await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ledger
    }

    /// Reads the next order with the session token and checks the answer; true if it answered.
    async fn read_one(&mut self, next: &mut usize, ledger: &mut Ledger) -> bool {
        let picked = {
            let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
            if session.orders.is_empty() {
                return false;
            }
            *next = (*next + 1) % session.orders.len();
            let (order_id, version) = session.orders[*next].clone();
            (session.token, order_id, version)
        };
        let (token, order_id, version) = picked;
        let mut request = Request::new(pb::GetOrderRequest {
            order_id: order_id.clone(),
            min_position: token,
        });
        request.set_timeout(CALL_DEADLINE);
        if let Ok(tenant) = MetadataValue::try_from(self.tenant.as_str()) {
            request
                .metadata_mut()
                .insert(shared::auth::TENANT_HEADER, tenant);
        }
        match self.queries.get_order(request).await {
            Ok(view) => {
                ledger.session_reads += 1;
                let view = view.into_inner();
                if view.version < version {
                    ledger.failures.push(format!(
                        "stale read: order {order_id} read with session token {token} \
                         answered version {}, but version {version} was acknowledged",
                        view.version
                    ));
                }
                true
            }
            Err(status) if retryable(status.code()) => {
                ledger.session_reads_refused += 1;
                false
            }
            Err(status) => {
                ledger.failures.push(format!(
                    "order {order_id} read with session token {token} got {:?}: {}",
                    status.code(),
                    status.message()
                ));
                true
            }
        }
    }
}

struct Client {
    commands: CommandServiceClient<Channel>,
    plans: TrainingPlanCommandServiceClient<Channel>,
    tenant: String,
    ledger: Ledger,
    acknowledged: Arc<AtomicUsize>,
    session: Arc<Mutex<Session>>,
}

impl Client {
    async fn run(mut self, stop: tokio_util::sync::CancellationToken) -> Ledger {
        let customer = new_id();
        let register = Command::Register(pb::RegisterCustomerRequest {
            command_id: new_id(),
            customer_id: customer.clone(),
            name: "Fault Tester".into(),
            email: "fault@example.com".into(),
            ..Default::default()
        });
        if !self.until_acknowledged(&register).await {
            return self.ledger;
        }
        let mut sequence = 0;
        while !stop.is_cancelled() {
            let mut commands = order_life(&customer, sequence);
            if sequence % 3 == 2 {
                commands.extend(plan_life(&customer));
            }
            for command in commands {
                if !self.until_acknowledged(&command).await {
                    return self.ledger;
                }
            }
            sequence += 1;
        }
        self.ledger
    }

    /// Sends `command` until it is acknowledged (true) or fails for good (false, recorded).
    async fn until_acknowledged(&mut self, command: &Command) -> bool {
        let command_id = command_id(command).to_owned();
        self.ledger.attempted.insert(command_id.clone());
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = Instant::now();
            match self.send(command).await {
                Ok(reply) => {
                    if let Some(order_id) = order_of(command) {
                        self.session
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .acknowledged(order_id, &reply);
                    }
                    self.ledger.acknowledged.insert(command_id, reply);
                    self.acknowledged.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(status) if retryable(status.code()) => {
                    *self
                        .ledger
                        .refusals
                        .entry(format!("{:?}", status.code()))
                        .or_default() += 1;
                    self.ledger.slowest_refusal =
                        self.ledger.slowest_refusal.max(attempt.elapsed());
                }
                Err(status) => {
                    self.ledger.failures.push(format!(
                        "{command:?} got {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    return false;
                }
            }
            if started.elapsed() > GIVE_UP_AFTER {
                self.ledger.failures.push(format!(
                    "{command:?} never acknowledged in {GIVE_UP_AFTER:?}"
                ));
                return false;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    async fn send(&mut self, command: &Command) -> Result<pb::CommandReply, tonic::Status> {
        let reply = match command.clone() {
            Command::Register(r) => self.commands.register_customer(self.request(r)).await,
            Command::Place(r) => self.commands.place_order(self.request(r)).await,
            Command::Confirm(r) => self.commands.confirm_order(self.request(r)).await,
            Command::Pay(r) => self.commands.process_payment(self.request(r)).await,
            Command::Ready(r) => self.commands.mark_order_ready(self.request(r)).await,
            Command::OutForDelivery(r) => {
                self.commands.send_out_for_delivery(self.request(r)).await
            }
            Command::Delivered(r) => self.commands.mark_order_delivered(self.request(r)).await,
            Command::Cancel(r) => self.commands.cancel_order(self.request(r)).await,
            plan => return self.send_plan(plan).await,
        };
        reply.map(tonic::Response::into_inner)
    }

    /// A training plan command, its reply in the shape of the pizzeria's (the same fields).
    async fn send_plan(&mut self, command: Command) -> Result<pb::CommandReply, tonic::Status> {
        let reply = match command {
            Command::CreatePlan(r) => self.plans.create_plan(self.request(r)).await,
            Command::AddBlock(r) => self.plans.add_training_block(self.request(r)).await,
            Command::Schedule(r) => self.plans.schedule_workout(self.request(r)).await,
            Command::Complete(r) => self.plans.complete_workout(self.request(r)).await,
            Command::Skip(r) => self.plans.skip_workout(self.request(r)).await,
            other => {
                return Err(tonic::Status::internal(format!(
                    "{other:?} is not a plan's"
                )));
            }
        }?
        .into_inner();
        Ok(pb::CommandReply {
            aggregate_id: reply.aggregate_id,
            version: reply.version,
            position: reply.position,
            replayed: reply.replayed,
            events_appended: reply.events_appended,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(CALL_DEADLINE);
        if let Ok(tenant) = MetadataValue::try_from(self.tenant.as_str()) {
            request
                .metadata_mut()
                .insert(shared::auth::TENANT_HEADER, tenant);
        }
        request
    }
}

fn command_id(command: &Command) -> &str {
    match command {
        Command::Register(r) => &r.command_id,
        Command::Place(r) => &r.command_id,
        Command::Confirm(r) => &r.command_id,
        Command::Pay(r) => &r.command_id,
        Command::Ready(r) => &r.command_id,
        Command::OutForDelivery(r) => &r.command_id,
        Command::Delivered(r) => &r.command_id,
        Command::Cancel(r) => &r.command_id,
        Command::CreatePlan(r) => &r.command_id,
        Command::AddBlock(r) => &r.command_id,
        Command::Schedule(r) => &r.command_id,
        Command::Complete(r) => &r.command_id,
        Command::Skip(r) => &r.command_id,
    }
}

/// The order a command is about (None for a registration and a plan's commands).
fn order_of(command: &Command) -> Option<&str> {
    Some(match command {
        Command::Register(_)
        | Command::CreatePlan(_)
        | Command::AddBlock(_)
        | Command::Schedule(_)
        | Command::Complete(_)
        | Command::Skip(_) => return None,
        Command::Place(r) => &r.order_id,
        Command::Confirm(r) => &r.order_id,
        Command::Pay(r) => &r.order_id,
        Command::Ready(r) => &r.order_id,
        Command::OutForDelivery(r) => &r.order_id,
        Command::Delivered(r) => &r.order_id,
        Command::Cancel(r) => &r.order_id,
    })
}

/// What the API documents as safe to retry with the same command id. `Unknown` and `Cancelled`
/// are what a connection cut mid-call looks like.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Cancelled
    )
}
