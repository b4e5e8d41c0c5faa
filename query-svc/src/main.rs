//! Parses configuration and runs [`query_svc::startup::App`].

use clap::Parser;
use query_svc::{config::Config, startup::App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    shared::telemetry::init(config.log_format);
    let app = App::build(config).await?;
    app.run_until_stopped(shared::shutdown::signal()).await
}
