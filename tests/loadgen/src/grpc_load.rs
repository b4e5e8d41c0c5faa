//! The load on this project: N gRPC clients, each taking orders through their life
//! (place → confirm → pay → ready → out for delivery → delivered), optionally with queries
//! between the steps, and sampled probes of how long a command takes to become visible in
//! query-svc.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use shared::proto::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient,
};
use tokio::task::JoinSet;
use tonic::{Request, metadata::MetadataValue, transport::Channel};

use crate::stats::{Latencies, Progress, Tally};

/// What the clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Mix {
    /// Only the commands of each order's life.
    Commands,
    /// The commands, plus a read-your-writes GetOrder after paying and a GetOrder at the end.
    Mixed,
    /// Only GetOrder, on orders placed before the measurement starts.
    GetOrder,
}

/// Where to send the load and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    pub commands: Channel,
    pub queries: Channel,
    /// Sent as `x-tenant-id` (services with auth off) ...
    pub tenant: String,
    /// ... or a bearer token naming the tenant (services with auth on).
    pub token: Option<String>,
}

impl Target {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(Duration::from_secs(10));
        let metadata = request.metadata_mut();
        if let Some(token) = &self.token {
            if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
                metadata.insert("authorization", value);
            }
        } else if let Ok(value) = MetadataValue::try_from(self.tenant.as_str()) {
            metadata.insert(shared::auth::TENANT_HEADER, value);
        }
        request
    }
}

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub clients: usize,
    pub mix: Mix,
    /// Measure for this long after the warm-up ...
    pub duration: Duration,
    /// ... or stop after this many orders (then there is no warm-up).
    pub orders: Option<u64>,
    pub warmup: Duration,
    /// Commands per second over all clients; None runs each client as fast as it can.
    pub rate: Option<f64>,
    /// Probe the projection lag after every n-th command of each client (0: never).
    pub lag_every: u32,
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadResult {
    pub tally: Tally,
    pub lag: Latencies,
    pub elapsed: Duration,
}

/// Names of the query operations (everything else is a command).
pub const QUERIES: &[&str] = &["GetOrder", "GetOrder(read-your-writes)"];

/// Runs the load and returns what it measured.
pub async fn run(target: &Target, options: &LoadOptions) -> anyhow::Result<LoadResult> {
    if options.mix == Mix::GetOrder {
        return run_get_order(target, options).await;
    }
    let shared = Arc::new(Shared::new(options));
    let mut clients = JoinSet::new();
    for index in 0..options.clients {
        let client = Client {
            target: target.clone(),
            commands: CommandServiceClient::new(target.commands.clone()),
            queries: QueryServiceClient::new(target.queries.clone()),
            shared: shared.clone(),
            options: options.clone(),
            interval: options
                .rate
                .map(|rate| Duration::from_secs_f64(options.clients as f64 / rate.max(0.001))),
            tally: Tally::default(),
            sent: 0,
            index,
        };
        clients.spawn(client.run());
    }
    let elapsed = shared.wait_for_end(options).await;
    let mut tally = Tally::default();
    while let Some(client) = clients.join_next().await {
        tally.add(&client?);
    }
    // Let the last lag probes land.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.probes_in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lag = shared.lag.lock().map(|l| l.clone()).unwrap_or_default();
    let mut probe_errors = shared
        .probe_errors
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    tally.add(&std::mem::take(&mut probe_errors));
    Ok(LoadResult {
        tally,
        lag,
        elapsed,
    })
}

/// State all clients of a run share.
#[derive(Debug)]
struct Shared {
    started: Instant,
    /// Latencies before this instant are warm-up and not recorded.
    measure_from: Instant,
    stop: AtomicBool,
    orders_started: AtomicU64,
    clients_finished: AtomicU64,
    commands_done: AtomicU64,
    lag: Mutex<Latencies>,
    probe_errors: Mutex<Tally>,
    probes_in_flight: AtomicU64,
}

impl Shared {
    fn new(options: &LoadOptions) -> Self {
        let warmup = if options.orders.is_some() {
            Duration::ZERO
        } else {
            options.warmup
        };
        Self {
            started: Instant::now(),
            measure_from: Instant::now() + warmup,
            stop: AtomicBool::new(false),
            orders_started: AtomicU64::new(0),
            clients_finished: AtomicU64::new(0),
            commands_done: AtomicU64::new(0),
            lag: Mutex::new(Latencies::default()),
            probe_errors: Mutex::new(Tally::default()),
            probes_in_flight: AtomicU64::new(0),
        }
    }

    fn measuring(&self) -> bool {
        Instant::now() >= self.measure_from
    }

    /// Waits for the duration (or for every client to finish its orders), then stops the
    /// clients; returns how long was measured.
    async fn wait_for_end(&self, options: &LoadOptions) -> Duration {
        let mut progress = Progress::new();
        let end = self.measure_from + options.duration;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress.tick("commands", self.commands_done.load(Ordering::Relaxed));
            let done = match options.orders {
                Some(_) => self.clients_finished.load(Ordering::Relaxed) >= options.clients as u64,
                None => Instant::now() >= end,
            };
            if done {
                break;
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        progress.finish();
        Instant::now().saturating_duration_since(self.measure_from.max(self.started))
    }
}

/// One client: one order at a time, one command at a time.
struct Client {
    target: Target,
    commands: CommandServiceClient<Channel>,
    queries: QueryServiceClient<Channel>,
    shared: Arc<Shared>,
    options: LoadOptions,
    /// Time between two commands when the load is paced.
    interval: Option<Duration>,
    tally: Tally,
    sent: u64,
    index: usize,
}

impl Client {
    async fn run(self) -> Tally {
        let shared = self.shared.clone();
        let tally = self.take_orders().await;
        shared.clients_finished.fetch_add(1, Ordering::Relaxed);
        tally
    }

    async fn take_orders(mut self) -> Tally {
        // Spread paced clients over one interval so they do not fire together.
        let mut next_send = Instant::now()
            + self.interval.map_or(Duration::ZERO, |i| {
                i.mul_f64(self.index as f64 / self.options.clients as f64)
            });
        let customer = uuid::Uuid::now_v7().to_string();
        let register = pb::RegisterCustomerRequest {
            command_id: new_id(),
            customer_id: customer.clone(),
            name: format!("Load client {}", self.index),
            email: format!("load{}@example.com", self.index),
            ..Default::default()
        };
        let mut commands = self.commands.clone();
        let target = self.target.clone();
        if self
            .call("RegisterCustomer", &mut next_send, None, async {
                commands.register_customer(target.request(register)).await
            })
            .await
            .is_none()
        {
            return self.tally;
        }
        while !self.shared.stop.load(Ordering::Relaxed) {
            let started = self.shared.orders_started.fetch_add(1, Ordering::Relaxed);
            if self.options.orders.is_some_and(|limit| started >= limit) {
                break;
            }
            self.order_life(&customer, &mut next_send).await;
        }
        self.tally
    }

    /// Takes one order through its life; gives up on the order at the first failure.
    async fn order_life(&mut self, customer: &str, next_send: &mut Instant) {
        let order = uuid::Uuid::now_v7().to_string();
        let target = self.target.clone();
        let mut commands = self.commands.clone();
        let (c, o) = (&mut commands, order.clone());
        let place = pb::PlaceOrderRequest {
            command_id: new_id(),
            order_id: o.clone(),
            customer_id: customer.to_owned(),
            items: vec![pb::OrderItem {
                name: "Margherita".into(),
                size: pb::PizzaSize::Large as i32,
                quantity: 2,
                unit_price_cents: 1299,
            }],
            ..Default::default()
        };
        let t = &target;
        let Some(_) = self
            .call("PlaceOrder", next_send, Some(&o), async {
                c.place_order(t.request(place)).await
            })
            .await
        else {
            return;
        };
        let confirm = pb::ConfirmOrderRequest {
            command_id: new_id(),
            order_id: o.clone(),
            estimated_delivery: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 3600,
                nanos: 0,
            }),
            ..Default::default()
        };
        let Some(_) = self
            .call("ConfirmOrder", next_send, Some(&o), async {
                c.confirm_order(t.request(confirm)).await
            })
            .await
        else {
            return;
        };
        let pay = pb::ProcessPaymentRequest {
            command_id: new_id(),
            order_id: o.clone(),
            method: pb::PaymentMethod::Card as i32,
            amount_cents: 2 * 1299,
            payment_reference: "ch_load".into(),
            ..Default::default()
        };
        let Some(paid) = self
            .call("ProcessPayment", next_send, Some(&o), async {
                c.process_payment(t.request(pay)).await
            })
            .await
        else {
            return;
        };
        if self.options.mix == Mix::Mixed {
            self.get_order("GetOrder(read-your-writes)", &o, paid.position)
                .await;
        }
        let ready = pb::MarkOrderReadyRequest {
            command_id: new_id(),
            order_id: o.clone(),
            ..Default::default()
        };
        let Some(_) = self
            .call("MarkOrderReady", next_send, Some(&o), async {
                c.mark_order_ready(t.request(ready)).await
            })
            .await
        else {
            return;
        };
        let out = pb::SendOutForDeliveryRequest {
            command_id: new_id(),
            order_id: o.clone(),
            driver_name: "Luigi".into(),
            ..Default::default()
        };
        let Some(_) = self
            .call("SendOutForDelivery", next_send, Some(&o), async {
                c.send_out_for_delivery(t.request(out)).await
            })
            .await
        else {
            return;
        };
        let delivered = pb::MarkOrderDeliveredRequest {
            command_id: new_id(),
            order_id: o.clone(),
            ..Default::default()
        };
        if self
            .call("MarkOrderDelivered", next_send, Some(&o), async {
                c.mark_order_delivered(t.request(delivered)).await
            })
            .await
            .is_some()
            && self.options.mix == Mix::Mixed
        {
            self.get_order("GetOrder", &o, 0).await;
        }
    }

    /// Sends one command (paced when a rate is set), records its latency or its error, and
    /// sometimes starts a lag probe. Paced latency runs from the planned send time, so a
    /// slow reply also counts against the commands queued behind it.
    async fn call(
        &mut self,
        operation: &'static str,
        next_send: &mut Instant,
        order: Option<&str>,
        send: impl Future<Output = Result<tonic::Response<pb::CommandReply>, tonic::Status>>,
    ) -> Option<pb::CommandReply> {
        let planned = match self.interval {
            Some(interval) => {
                tokio::time::sleep_until((*next_send).into()).await;
                let planned = *next_send;
                *next_send += interval;
                planned
            }
            None => Instant::now(),
        };
        let result = send.await;
        let replied = Instant::now();
        let measuring = self.shared.measuring();
        self.shared.commands_done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(reply) => {
                let reply = reply.into_inner();
                if measuring {
                    self.tally.record(operation, replied - planned);
                }
                self.sent += 1;
                let every = u64::from(self.options.lag_every);
                if let (Some(order), true) = (order, every > 0 && self.sent % every == 0) {
                    if measuring {
                        self.probe_lag(order.to_owned(), reply.position, replied);
                    }
                }
                Some(reply)
            }
            Err(status) => {
                self.tally.error(operation, status.code().description());
                None
            }
        }
    }

    async fn get_order(&mut self, operation: &'static str, order: &str, min_position: u64) {
        let started = Instant::now();
        let result = self
            .queries
            .get_order(self.target.request(pb::GetOrderRequest {
                order_id: order.to_owned(),
                min_position,
            }))
            .await;
        match result {
            Ok(_) if self.shared.measuring() => self.tally.record(operation, started.elapsed()),
            Ok(_) => {}
            Err(status) => self.tally.error(operation, status.code().description()),
        }
    }

    /// In the background: how long after `replied` the order shows the command in query-svc
    /// (a GetOrder that waits for `position`; includes that call's own round trip).
    fn probe_lag(&self, order: String, position: u64, replied: Instant) {
        let shared = self.shared.clone();
        let target = self.target.clone();
        let mut queries = self.queries.clone();
        shared.probes_in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let result = queries
                .get_order(target.request(pb::GetOrderRequest {
                    order_id: order,
                    min_position: position,
                }))
                .await;
            match result {
                Ok(_) => {
                    if let Ok(mut lag) = shared.lag.lock() {
                        lag.record(replied.elapsed());
                    }
                }
                Err(status) => {
                    if let Ok(mut errors) = shared.probe_errors.lock() {
                        errors.error("lag probe", status.code().description());
                    }
                }
            }
            shared.probes_in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// GetOrder only: places `orders` (default 1,000) orders, waits until query-svc shows them,
/// then every client reads random ones for the duration.
async fn run_get_order(target: &Target, options: &LoadOptions) -> anyhow::Result<LoadResult> {
    let ids = seed_orders(target, options.orders.unwrap_or(1000)).await?;
    let ids = Arc::new(ids);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + options.warmup;
    let mut clients = JoinSet::new();
    for index in 0..options.clients {
        let (target, ids, stop, done) = (target.clone(), ids.clone(), stop.clone(), done.clone());
        clients.spawn(async move {
            let mut queries = QueryServiceClient::new(target.queries.clone());
            let mut tally = Tally::default();
            let mut random = XorShift(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                let order = &ids[random.below(ids.len())];
                let started = Instant::now();
                let result = queries
                    .get_order(target.request(pb::GetOrderRequest {
                        order_id: order.clone(),
                        min_position: 0,
                    }))
                    .await;
                done.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(_) if started >= measure_from => tally.record("GetOrder", started.elapsed()),
                    Ok(_) => {}
                    Err(status) => tally.error("GetOrder", status.code().description()),
                }
            }
            tally
        });
    }
    let mut progress = Progress::new();
    let end = measure_from + options.duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.tick("queries", done.load(Ordering::Relaxed));
    }
    stop.store(true, Ordering::Relaxed);
    progress.finish();
    let elapsed = measure_from.elapsed();
    let mut tally = Tally::default();
    while let Some(client) = clients.join_next().await {
        tally.add(&client?);
    }
    Ok(LoadResult {
        tally,
        lag: Latencies::default(),
        elapsed,
    })
}

/// The id of the n-th seeded order: fixed, so pgbench can select the same rows by key.
pub fn seeded_order_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Places orders 1..=count (ids from [`seeded_order_id`]) and waits until query-svc shows
/// the last one.
async fn seed_orders(target: &Target, count: u64) -> anyhow::Result<Vec<String>> {
    let mut commands = CommandServiceClient::new(target.commands.clone());
    let customer = uuid::Uuid::now_v7().to_string();
    commands
        .register_customer(target.request(pb::RegisterCustomerRequest {
            command_id: new_id(),
            customer_id: customer.clone(),
            name: "Seed".into(),
            email: "seed@example.com".into(),
            ..Default::default()
        }))
        .await?;
    let ids: Vec<String> = (1..=count).map(seeded_order_id).collect();
    let mut last_position = 0;
    for chunk in ids.chunks(32) {
        let mut calls = JoinSet::new();
        for id in chunk {
            let mut commands = commands.clone();
            let request = target.request(pb::PlaceOrderRequest {
                command_id: new_id(),
                order_id: id.clone(),
                customer_id: customer.clone(),
                items: vec![pb::OrderItem {
                    name: "Margherita".into(),
                    size: pb::PizzaSize::Large as i32,
                    quantity: 1,
                    unit_price_cents: 1299,
                }],
                ..Default::default()
            });
            calls.spawn(async move { commands.place_order(request).await });
        }
        while let Some(reply) = calls.join_next().await {
            last_position = last_position.max(reply??.into_inner().position);
        }
    }
    let mut queries = QueryServiceClient::new(target.queries.clone());
    let mut request = target.request(pb::GetOrderRequest {
        order_id: ids.last().cloned().unwrap_or_default(),
        min_position: last_position,
    });
    request.set_timeout(Duration::from_secs(60));
    queries.get_order(request).await?;
    Ok(ids)
}

/// A tiny deterministic generator: runs are repeatable and need no extra crate.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % (n.max(1) as u64)).unwrap_or(0)
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
