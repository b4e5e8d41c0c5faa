//! Parses configuration and runs [`query_svc::startup::App`].

use clap::Parser;
use query_svc::{config::Config, startup::App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let common = config.common.clone();
    shared::service::main("query-svc", config.grpc_addr, &common, || async move {
        let app = App::build(config).await?;
        app.run_until_stopped(shared::shutdown::signal()).await
    })
    .await
}
