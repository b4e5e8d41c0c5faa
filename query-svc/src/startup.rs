//! Builds and runs the server: `App::build` binds, `run_until_stopped` serves until shutdown.

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;

/// A bound, ready-to-run query-svc.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    config: Config,
}

impl App {
    /// Binds the listen address. Port 0 picks a free port (tests use that).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
        Ok(Self { listener, config })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (health, routes) = shared::grpc::base_routes().await?;
        tracing::info!(addr = %self.local_addr()?, "query-svc listening");
        let drain = self.config.shutdown_drain_timeout;
        let timeout = std::time::Duration::from_secs(30);
        shared::grpc::serve(self.listener, routes, health, shutdown, drain, timeout)
            .await
            .context("gRPC server failed")
    }
}
