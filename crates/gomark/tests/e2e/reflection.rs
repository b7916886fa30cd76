//! gRPC reflection answers in both versions tools speak: v1, and v1alpha, which grpcurl and
//! Python's grpcio-reflection still use.

use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use tonic_reflection::pb::{v1, v1alpha};

#[tokio::test]
async fn every_port_lists_only_its_services_over_v1_and_v1alpha() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    for (name, addr) in &gomark.services {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");

        let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut replies =
            alpha.server_reflection_info(tokio_stream::iter([request])).await.expect("v1alpha answers").into_inner();
        let reply = replies.message().await.expect("a reply").expect("one message");
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            reply.message_response
        else {
            panic!("{name}: v1alpha answered {:?}", reply.message_response);
        };
        let mut services: Vec<String> = list.service.iter().map(|s| s.name.clone()).collect();
        services.sort_unstable();
        // Exactly what this port serves: its own service (the gateway's serves only health),
        // health and reflection.
        let mut expected: Vec<String> = own_services(name).iter().map(|s| (*s).to_owned()).collect();
        expected.push("grpc.health.v1.Health".to_owned());
        expected.sort_unstable();
        let served: Vec<String> = services.iter().filter(|s| !s.starts_with("grpc.reflection.")).cloned().collect();
        assert_eq!(served, expected, "{name}: v1alpha lists {services:?}");

        let mut v1 = v1::server_reflection_client::ServerReflectionClient::new(channel);
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut replies =
            v1.server_reflection_info(tokio_stream::iter([request])).await.expect("v1 answers").into_inner();
        let reply = replies.message().await.expect("a reply").expect("one message");
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = reply.message_response
        else {
            panic!("{name}: v1 answered {:?}", reply.message_response);
        };
        let mut v1_services: Vec<String> = list.service.iter().map(|s| s.name.clone()).collect();
        v1_services.sort_unstable();
        assert_eq!(v1_services, services, "{name}: v1 lists the same services as v1alpha");
    }
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// The GoMark services the gRPC port of `port` serves.
fn own_services(port: &str) -> &'static [&'static str] {
    use gomark_proto::hubspot_sync::v1::hubspot_sync_service_server as hubspot_sync;
    use gomark_proto::orchestrator::v1::orchestrator_service_server as orchestrator;
    use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_server as pipeline_tracker;
    use gomark_proto::upso_cadence::v1::upso_cadence_service_server as upso_cadence;
    match port {
        "gateway" => &[],
        "orchestrator" => &[orchestrator::SERVICE_NAME],
        "hubspot-sync" => &[hubspot_sync::SERVICE_NAME],
        "upso-cadence" => &[upso_cadence::SERVICE_NAME],
        "pipeline-tracker" => &[pipeline_tracker::SERVICE_NAME],
        other => panic!("a port this test does not know: {other}"),
    }
}
