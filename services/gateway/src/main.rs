//! The gateway binary: settings, telemetry, serve.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gomark_service::run_main(gomark_gateway::NAME, gomark_gateway::start).await
}
