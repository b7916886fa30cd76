//! Building and reading event envelopes.

pub use gomark_proto::events::v1::EventEnvelope;
use prost::Message;

/// The event types GoMark publishes; the payload message is named beside each.
pub mod event_types {
    /// `CompanyCreated`
    pub const COMPANY_CREATED: &str = "company.created";
    /// `RevisionCreated`
    pub const REVISION_CREATED: &str = "revision.created";
    /// `DealUpserted`
    pub const DEAL_UPSERTED: &str = "deal.upserted";
    /// `DealDeleted`
    pub const DEAL_DELETED: &str = "deal.deleted";
    /// `DealStageChanged`
    pub const DEAL_STAGE_CHANGED: &str = "deal.stage_changed";
    /// `DriftDetected`
    pub const DRIFT_DETECTED: &str = "drift.detected";
    /// `UpsellDecided`
    pub const UPSELL_DECIDED: &str = "upsell.decided";
}

/// A new envelope for `payload`, stamped now, carrying the current trace context.
pub fn new_event(company_id: &str, event_type: &str, payload: &impl Message) -> EventEnvelope {
    let now = chrono::Utc::now();
    EventEnvelope {
        id: uuid::Uuid::now_v7().to_string(),
        company_id: company_id.to_owned(),
        r#type: event_type.to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        trace_context: gomark_platform::telemetry::current_trace_context(),
        payload: payload.encode_to_vec(),
    }
}

/// Decodes the payload as `M`; the caller picked `M` from `envelope.type`.
pub fn decode_payload<M: Message + Default>(envelope: &EventEnvelope) -> Result<M, prost::DecodeError> {
    M::decode(envelope.payload.as_slice())
}

/// The subject an event travels on: `<prefix>.<type>.<company>`, so consumers can filter
/// by type, and later by company, without decoding.
pub fn subject(prefix: &str, envelope: &EventEnvelope) -> String {
    let company = if envelope.company_id.is_empty() { "_" } else { envelope.company_id.as_str() };
    format!("{prefix}.{}.{company}", envelope.r#type)
}
