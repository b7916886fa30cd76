//! An event carries its producer's trace, and its consumer continues that trace.

use gomark_events::envelope::new_event;
use gomark_platform::telemetry::adopt_trace_context;
use gomark_proto::events::v1::CompanyCreated;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn the_consumer_span_joins_the_producer_trace() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let producer = tracing::info_span!("producer");
        let trace_id = producer.context().span().span_context().trace_id();
        let event = producer.in_scope(|| new_event("c1", "company.created", &CompanyCreated::default()));
        let traceparent = event.trace_context.get("traceparent").expect("traceparent in the envelope");
        assert!(traceparent.contains(&trace_id.to_string()), "{traceparent}");

        let consumer = tracing::info_span!("consumer");
        adopt_trace_context(&consumer, &event.trace_context);
        assert_eq!(consumer.context().span().span_context().trace_id(), trace_id);
    });
}
