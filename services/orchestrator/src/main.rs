//! The orchestrator binary: settings, telemetry, backends, serve.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gomark_service::run_main(
        gomark_orchestrator::NAME,
        |settings: gomark_orchestrator::Settings, shutdown| async move {
            let backends = gomark_service::Backends::connect(&settings.common).await?;
            gomark_orchestrator::start(settings, backends, shutdown).await
        },
    )
    .await
}
