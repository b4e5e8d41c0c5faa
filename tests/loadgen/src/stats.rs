//! Latency histograms, error counts and the report they add up to.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies of one kind of operation, in microseconds (1 µs to 60 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latencies {
    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
        }
    }
}

/// Percentiles of a [`Latencies`], in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What one client (or task) measured; clients' tallies are added up at the end.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Latency by operation (rpc name, or "command" for a peer).
    pub latency: BTreeMap<&'static str, Latencies>,
    /// Failed calls by "operation: status".
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn record(&mut self, operation: &'static str, elapsed: Duration) {
        self.latency.entry(operation).or_default().record(elapsed);
    }

    pub fn error(&mut self, operation: &'static str, status: impl std::fmt::Display) {
        *self
            .errors
            .entry(format!("{operation}: {status}"))
            .or_default() += 1;
    }

    pub fn add(&mut self, other: &Tally) {
        for (operation, latencies) in &other.latency {
            self.latency.entry(operation).or_default().add(latencies);
        }
        for (error, count) in &other.errors {
            *self.errors.entry(error.clone()).or_default() += count;
        }
    }

    /// All operations whose name passes `filter`, as one histogram.
    pub fn combined(&self, filter: impl Fn(&str) -> bool) -> Latencies {
        let mut all = Latencies::default();
        for latencies in self
            .latency
            .iter()
            .filter(|(op, _)| filter(op))
            .map(|(_, l)| l)
        {
            all.add(latencies);
        }
        all
    }
}

/// The result of one run of one system under one load.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Which system: "pizzeria (gRPC)", "cqrs-es + postgres-es", "pgbench: ...".
    pub system: String,
    pub clients: usize,
    pub seconds: f64,
    /// Commands acknowledged per second (or transactions per second for pgbench).
    pub commands_per_sec: f64,
    pub queries_per_sec: f64,
    pub command_latency: LatencySummary,
    pub query_latency: LatencySummary,
    /// Command reply → visible in query-svc, sampled.
    pub projection_lag: Option<LatencySummary>,
    pub by_operation: BTreeMap<String, LatencySummary>,
    pub errors: BTreeMap<String, u64>,
}

impl RunReport {
    /// Builds the report of `tally`, measured over `elapsed`. Operations named in `queries`
    /// count as queries, the rest as commands.
    pub fn from_tally(
        system: impl Into<String>,
        clients: usize,
        elapsed: Duration,
        tally: &Tally,
        queries: &[&str],
        lag: Option<&Latencies>,
    ) -> Self {
        let commands = tally.combined(|op| !queries.contains(&op));
        let query = tally.combined(|op| queries.contains(&op));
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            system: system.into(),
            clients,
            seconds,
            commands_per_sec: commands.count() as f64 / seconds,
            queries_per_sec: query.count() as f64 / seconds,
            command_latency: commands.summary(),
            query_latency: query.summary(),
            projection_lag: lag.filter(|l| l.count() > 0).map(Latencies::summary),
            by_operation: tally
                .latency
                .iter()
                .map(|(op, l)| ((*op).to_owned(), l.summary()))
                .collect(),
            errors: tally.errors.clone(),
        }
    }
}

/// Prints reports as one table.
pub fn print_table(reports: &[RunReport]) {
    println!(
        "{:<34} {:>7} {:>10} {:>8} {:>8} {:>8} {:>9} {:>10} {:>9} {:>9} {:>7}",
        "system",
        "clients",
        "cmd/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "query/s",
        "lag p50",
        "lag p99",
        "errors"
    );
    for r in reports {
        let lag = |f: fn(&LatencySummary) -> f64| {
            r.projection_lag
                .as_ref()
                .map_or_else(|| "-".to_owned(), |l| format!("{:.2}", f(l)))
        };
        println!(
            "{:<34} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>10.0} {:>9} {:>9} {:>7}",
            r.system,
            r.clients,
            r.commands_per_sec,
            r.command_latency.p50_ms,
            r.command_latency.p90_ms,
            r.command_latency.p99_ms,
            r.command_latency.max_ms,
            r.queries_per_sec,
            lag(|l| l.p50_ms),
            lag(|l| l.p99_ms),
            r.errors.values().sum::<u64>(),
        );
    }
}

/// A one-line progress report on stderr every second, when stderr is a terminal.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    last: Instant,
    enabled: bool,
}

impl Progress {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            started: Instant::now(),
            last: Instant::now(),
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// Prints `done` so far (at most once a second).
    pub fn tick(&mut self, label: &str, done: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        eprint!(
            "\r{label}: {done} done in {secs:.0} s ({:.0}/s)   ",
            done as f64 / secs.max(1e-9)
        );
    }

    pub fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
