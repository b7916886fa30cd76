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
        let mut services: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        services.sort_unstable();
        // Exactly what this port serves: its own service (the gateway's serves only health),
        // health and reflection.
        let own = services.iter().filter(|s| s.starts_with("gomark.")).count();
        assert_eq!(own, usize::from(*name != "gateway"), "{name}: {services:?}");
        assert!(services.contains(&"grpc.health.v1.Health"), "{name}: {services:?}");
        assert!(services.iter().all(|s| s.starts_with("gomark.") || s.starts_with("grpc.")), "{name}: {services:?}");

        let mut v1 = v1::server_reflection_client::ServerReflectionClient::new(channel);
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut replies =
            v1.server_reflection_info(tokio_stream::iter([request])).await.expect("v1 answers").into_inner();
        let reply = replies.message().await.expect("a reply").expect("one message");
        assert!(
            matches!(
                reply.message_response,
                Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(_))
            ),
            "{name}: v1 answered {:?}",
            reply.message_response
        );
    }
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}
