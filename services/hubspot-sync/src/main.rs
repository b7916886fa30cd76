//! The hubspot-sync binary: settings, telemetry, backends, serve.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gomark_service::run_main(
        gomark_hubspot_sync::NAME,
        |settings: gomark_hubspot_sync::Settings, shutdown| async move {
            let backends = gomark_service::Backends::connect(&settings.common).await?;
            gomark_hubspot_sync::start(settings, backends, shutdown).await
        },
    )
    .await
}
