//! Parses configuration and runs [`command_svc::startup::App`].

use clap::Parser;
use command_svc::{config::Config, startup::App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.probe {
        let serving = shared::grpc::probe(config.grpc_addr).await;
        std::process::exit(if serving { 0 } else { 1 });
    }
    let otlp =
        shared::telemetry::OtlpExport::configured(config.otlp_endpoint.as_deref(), "command-svc");
    let telemetry = shared::telemetry::init(config.log_format, otlp)?;
    let app = App::build(config).await?;
    let served = app.run_until_stopped(shared::shutdown::signal()).await;
    telemetry.shutdown().await;
    served
}
