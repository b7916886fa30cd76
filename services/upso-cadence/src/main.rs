//! The upso-cadence binary: settings, telemetry, backends, serve.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gomark_service::run_main(gomark_upso_cadence::NAME, gomark_upso_cadence::start_with_backends).await
}
