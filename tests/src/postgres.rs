//! A Postgres server of one test's own, to stop, pause and restart without touching the shared
//! one: `initdb` into a temp directory, `postgres` on a free port.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// A private Postgres cluster (trust auth, user `postgres`), removed when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub fn start() -> anyhow::Result<Self> {
        let mut postgres = Self::create()?;
        postgres.restart()?;
        Ok(postgres)
    }

    /// Creates the cluster on a free port without starting it ([`Self::restart`] starts it).
    pub fn create() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let postgres = Self {
            port,
            dir,
            child: None,
        };
        postgres.own_dir()?;
        let status = postgres
            .command("initdb")?
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(postgres.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run initdb (are the PostgreSQL server binaries installed?)")?;
        if !status.success() {
            bail!("initdb failed in {}", postgres.dir.display());
        }
        Ok(postgres)
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database.
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("psql")
            .args([
                "-q",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url("postgres"),
            ])
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .stdout(Stdio::null())
            .status()
            .context("cannot run psql")?;
        if !status.success() {
            bail!("CREATE DATABASE {name} failed");
        }
        Ok(())
    }

    /// Starts the server (again) on the same port and data directory and waits until it
    /// accepts connections (after crash recovery, if it was stopped by [`Self::stop_immediately`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let child = self
            .command("postgres")?
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Tests crash the server process, not the machine: the OS page cache keeps what
                // was written, so fsync only costs time here.
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start postgres")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("private postgres on port {} did not come up", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Immediate shutdown (SIGQUIT): every connection is cut, nothing is checkpointed, and the
    /// next start runs crash recovery — as after a crash of the server.
    pub fn stop_immediately(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "QUIT");
            if !wait_with_timeout(&mut child, Duration::from_secs(10)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP to the server and every backend: connections stay open but nothing answers.
    /// (Backends are session leaders of their own, so a process group signal would miss them.)
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            signal(child, "STOP");
            signal_children(child, "STOP");
        }
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            signal_children(child, "CONT");
            signal(child, "CONT");
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Postgres refuses to run as root: when the tests do, the server runs as `postgres`.
    fn command(&self, binary: &str) -> anyhow::Result<Command> {
        let path = find_binary(binary)?;
        Ok(if running_as_root() {
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(path);
            command
        } else {
            Command::new(path)
        })
    }

    fn own_dir(&self) -> anyhow::Result<()> {
        if running_as_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&self.dir)
                .status()?;
            if !status.success() {
                bail!("cannot hand {} to the postgres user", self.dir.display());
            }
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.resume();
        self.stop_immediately();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(child: &Child, name: &str) {
    crate::signal(child.id(), name);
}

fn signal_children(parent: &Child, name: &str) {
    let _ = Command::new("pkill")
        .args([format!("-{name}"), "-P".to_owned(), parent.id().to_string()])
        .status();
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// `initdb` and `postgres` are not on PATH on Debian; look in the versioned directory too.
fn find_binary(binary: &str) -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(binary));
    let versioned = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin").join(binary));
    on_path
        .chain(versioned)
        .find(|path| Path::new(path).exists())
        .with_context(|| format!("{binary} not found (install the PostgreSQL server package)"))
}
