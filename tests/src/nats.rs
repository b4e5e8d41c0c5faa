//! NATS for tests: a JetStream stream of one's own on the shared server, a private `nats-server`
//! to kill and restart, and a reader of everything a stream holds.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use async_nats::jetstream;
use prost::Message as _;
use shared::{envelope::headers, proto::v1 as pb};

/// The shared NATS server (`NATS_URL`, default `nats://127.0.0.1:4222`).
pub fn shared_nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A stream name and subject prefix no other test uses; the stream is deleted when dropped.
#[derive(Debug)]
pub struct TestStream {
    pub name: String,
    pub subject_prefix: String,
    pub nats_url: String,
}

impl TestStream {
    /// A fresh stream identity on the shared server.
    pub fn new() -> Self {
        Self::on(&shared_nats_url())
    }

    /// A fresh stream identity on the server at `nats_url`.
    pub fn on(nats_url: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            name: format!("TEST_{id}"),
            subject_prefix: format!("test.{id}"),
            nats_url: nats_url.to_owned(),
        }
    }

    /// The command-svc flags that make its relay publish here.
    pub fn relay_flags(&self) -> Vec<String> {
        vec![
            "--nats-url".into(),
            self.nats_url.clone(),
            "--nats-stream".into(),
            self.name.clone(),
            "--nats-subject-prefix".into(),
            self.subject_prefix.clone(),
        ]
    }

    /// The same settings as environment variables, for the service binaries.
    pub fn relay_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", self.nats_url.clone()),
            ("NATS_STREAM", self.name.clone()),
            ("NATS_SUBJECT_PREFIX", self.subject_prefix.clone()),
        ]
    }

    /// Creates the stream (subjects `<prefix>.>`), as command-svc's relay would: for tests that
    /// publish themselves or start query-svc without command-svc.
    pub async fn create(&self) -> anyhow::Result<()> {
        let client = async_nats::connect(&self.nats_url).await?;
        async_nats::jetstream::new(client)
            .create_stream(async_nats::jetstream::stream::Config {
                name: self.name.clone(),
                subjects: vec![format!("{}.>", self.subject_prefix)],
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Every message the stream holds, in stream order (empty if the stream does not exist yet).
    /// Fails loudly when NATS is unreachable.
    pub async fn messages(&self) -> anyhow::Result<Vec<PublishedEvent>> {
        let client = async_nats::connect(&self.nats_url)
            .await
            .with_context(|| format!("NATS at {} is required for this test", self.nats_url))?;
        let jetstream = jetstream::new(client);
        let mut stream = match jetstream.get_stream(&self.name).await {
            Ok(stream) => stream,
            Err(error)
                if matches!(
                    error.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref e)
                        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Ok(Vec::new());
            }
            Err(error) => return Err(error.into()),
        };
        let state = stream.info().await?.state.clone();
        let mut messages = Vec::new();
        if state.messages == 0 {
            return Ok(messages);
        }
        for sequence in state.first_sequence..=state.last_sequence {
            let message = stream.get_raw_message(sequence).await?;
            messages.push(PublishedEvent::decode(
                sequence,
                &message.headers,
                &message.payload,
            )?);
        }
        Ok(messages)
    }

    /// Polls until the stream holds at least `count` messages or `timeout` passes; returns what
    /// it holds then.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<PublishedEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages().await?;
            if messages.len() >= count || Instant::now() > deadline {
                return Ok(messages);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Default for TestStream {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: delete on a thread
        // with a runtime of its own. A server that is gone (a private one) is fine.
        let url = self.nats_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let connect = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url);
                if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(3), connect).await
                {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(3),
                        jetstream::new(client).delete_stream(&name),
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

/// One message of the event stream, decoded.
#[derive(Debug, Clone)]
pub struct PublishedEvent {
    pub sequence: u64,
    pub event_id: String,
    /// `(Es-Txid, Es-Pos)`: the commit-order key the relay publishes in.
    pub transaction_id: u64,
    pub global_position: i64,
    pub stream_id: String,
    pub stream_version: u64,
    pub record: pb::EventRecord,
}

impl PublishedEvent {
    fn decode(sequence: u64, map: &async_nats::HeaderMap, payload: &[u8]) -> anyhow::Result<Self> {
        let header = |name: &str| -> anyhow::Result<String> {
            Ok(map
                .get(name)
                .with_context(|| format!("message {sequence} has no {name} header"))?
                .as_str()
                .to_owned())
        };
        let record = pb::EventRecord::decode(payload)
            .with_context(|| format!("message {sequence} is not an EventRecord"))?;
        let published = Self {
            sequence,
            event_id: header(headers::EVENT_ID)?,
            transaction_id: header(headers::TRANSACTION_ID)?.parse()?,
            global_position: header(headers::POSITION)?.parse()?,
            stream_id: header(headers::STREAM)?,
            stream_version: header(headers::VERSION)?.parse()?,
            record,
        };
        if published.record.event_id != published.event_id
            || published.record.global_position != u64::try_from(published.global_position)?
        {
            bail!("message {sequence}: headers and body disagree");
        }
        Ok(published)
    }
}

/// Every event in Postgres in the relay's order: `(transaction_id, global_position)`.
pub async fn event_ids_in_commit_order(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_id::text FROM events ORDER BY events.transaction_id, global_position",
    )
    .fetch_all(pool)
    .await
    .expect("query events (is this the event store database?)")
}

/// `(global_position, transaction_id)` of every event, in commit order.
async fn commit_order(pool: &sqlx::PgPool) -> Vec<(i64, String, String)> {
    sqlx::query_as(
        "SELECT global_position, transaction_id::text, event_id::text FROM events
         ORDER BY events.transaction_id, global_position",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

/// Waits until JetStream holds as many messages as Postgres has events, then checks the relay's
/// promise: the stream holds every committed event exactly once, in commit order, with
/// consecutive versions per aggregate stream. Returns the messages for further checks.
pub async fn assert_relayed(pool: &sqlx::PgPool, stream: &TestStream) -> Vec<PublishedEvent> {
    let expected = event_ids_in_commit_order(pool).await;
    let published = stream
        .wait_for(expected.len(), std::time::Duration::from_secs(20))
        .await
        .expect("read the stream");
    let ids: Vec<&str> = published.iter().map(|m| m.event_id.as_str()).collect();
    if ids != expected {
        let first_difference = ids
            .iter()
            .zip(&expected)
            .position(|(published, committed)| published != committed)
            .unwrap_or(ids.len().min(expected.len()));
        let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
        let missing = expected
            .iter()
            .filter(|id| !unique.contains(id.as_str()))
            .count();
        // Shown as `stream sequence/global position/transaction id` and `global position/
        // transaction id` in the log's order.
        let stream_window: Vec<String> = published
            .iter()
            .skip(first_difference.saturating_sub(2))
            .take(8)
            .map(|m| format!("{}/{}/{}", m.sequence, m.global_position, m.transaction_id))
            .collect();
        let log = commit_order(pool).await;
        let report = std::env::temp_dir().join(format!("relay-mismatch-{}.txt", stream.name));
        let mut lines = vec!["stream: sequence position transaction event".to_owned()];
        lines.extend(published.iter().map(|m| {
            format!(
                "{} {} {} {}",
                m.sequence, m.global_position, m.transaction_id, m.event_id
            )
        }));
        lines.push("log: position transaction event".to_owned());
        lines.extend(log.iter().map(|(p, t, e)| format!("{p} {t} {e}")));
        let _ = std::fs::write(&report, lines.join("\n"));
        let log_window: Vec<String> = log
            .into_iter()
            .skip(first_difference.saturating_sub(2))
            .take(8)
            .map(|(position, transaction, _)| format!("{position}/{transaction}"))
            .collect();
        panic!(
            "the stream does not hold each event once in commit order: {} messages for {} \
             events ({} duplicates, {missing} missing); first difference at index \
             {first_difference}: stream {:?}, log {:?} (all of both in {})",
            ids.len(),
            expected.len(),
            ids.len() - unique.len(),
            stream_window,
            log_window,
            report.display(),
        );
    }
    let mut last_version = std::collections::HashMap::new();
    for message in &published {
        let last = last_version.insert(message.stream_id.clone(), message.stream_version);
        assert_eq!(
            message.stream_version,
            last.unwrap_or(0) + 1,
            "versions of {} are consecutive",
            message.stream_id
        );
    }
    published
}

/// A `nats-server -js` of one test's own, on a free port with its own store directory, to kill
/// and restart without touching the shared server.
#[derive(Debug)]
pub struct PrivateNats {
    pub port: u16,
    pub store_dir: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    pub fn start() -> anyhow::Result<Self> {
        let mut nats = Self::create()?;
        nats.restart()?;
        Ok(nats)
    }

    /// A port and a store directory, with no server running yet ([`Self::restart`] starts it).
    pub fn create() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let store_dir =
            std::env::temp_dir().join(format!("nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store_dir)?;
        Ok(Self {
            port,
            store_dir,
            child: None,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store directory (after [`Self::kill`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        // Debian installs it in /usr/sbin, which is not on every user's PATH.
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .unwrap_or("nats-server");
        let child = Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nats-server (is it installed? see scripts/setup.sh)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("private nats-server on port {} did not come up", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server cleanly (SIGTERM: it flushes its store) and copies the store aside
    /// (see [`Self::stop_and_restore_store`]); the server is not restarted.
    pub fn stop_and_copy_store(&mut self) -> anyhow::Result<PathBuf> {
        self.stop();
        let copy = self.store_dir.with_extension("copy");
        copy_dir(&self.store_dir, &copy)?;
        Ok(copy)
    }

    /// Stops the server cleanly and puts back a copy taken by [`Self::stop_and_copy_store`], as
    /// after a loss of acknowledged writes (lazy fsync and a power cut, a restored backup); the
    /// server is not restarted.
    pub fn stop_and_restore_store(&mut self, copy: &std::path::Path) -> anyhow::Result<()> {
        self.stop();
        std::fs::remove_dir_all(&self.store_dir)?;
        copy_dir(copy, &self.store_dir)?;
        std::fs::remove_dir_all(copy)?;
        Ok(())
    }

    /// SIGSTOP: the server hangs with its connections open.
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            crate::signal(child.id(), "STOP");
        }
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            crate::signal(child.id(), "CONT");
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERM, and waits for the server to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// `kill -9`: no clean shutdown, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
