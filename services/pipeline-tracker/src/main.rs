//! The pipeline-tracker binary: settings, telemetry, serve.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gomark_service::run_main(gomark_pipeline_tracker::NAME, gomark_pipeline_tracker::start).await
}
