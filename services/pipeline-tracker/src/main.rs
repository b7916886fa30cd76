//! The pipeline-tracker binary: settings, telemetry, backends, serve.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gomark_service::run_main(
        gomark_pipeline_tracker::NAME,
        |settings: gomark_pipeline_tracker::Settings, shutdown| async move {
            let backends = gomark_service::Backends::connect(&settings.common).await?;
            gomark_pipeline_tracker::start(settings, backends, shutdown).await
        },
    )
    .await
}
