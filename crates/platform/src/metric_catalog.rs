//! Every metric GoMark exports, with its HELP text and unit, described once at startup so
//! that `/metrics` carries a `# HELP` line for each (Prometheus and Grafana show it).
//! A new metric is added here too; the e2e test `every_metric_has_help` fails otherwise.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Describes every metric and sets `build_info`. Idempotent.
pub fn describe() {
    describe_gauge!(
        "events_outbox_pending",
        "Events written to this service's outbox and not yet published to the bus."
    );
    describe_gauge!(
        "events_outbox_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest event still waiting in the outbox (0 when it is empty)."
    );
    describe_gauge!(
        "events_consumer_pending",
        "Events on the bus still waiting for this durable consumer (the server's count): consumer lag."
    );
    describe_gauge!("build_info", "Always 1; its labels say which GoMark build runs (version).");
    metrics::gauge!("build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    crate::process_metrics::describe();

    // Requests served (crates/platform/src/server/request_telemetry.rs).
    describe_counter!(
        "http_server_requests_total",
        Unit::Count,
        "HTTP requests served, by method, matched route and status."
    );
    describe_histogram!(
        "http_server_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method and matched route."
    );
    describe_counter!("grpc_server_requests_total", Unit::Count, "gRPC calls served, by method and status code.");
    describe_histogram!(
        "grpc_server_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a gRPC call, by method."
    );

    // Calls to HubSpot and Upso (crates/vendor-http), by vendor and portal.
    describe_counter!(
        "vendor_http_requests_total",
        Unit::Count,
        "HTTP requests sent to HubSpot or Upso, by vendor, portal, method and status (or error kind)."
    );
    describe_counter!(
        "vendor_http_rate_limited_total",
        Unit::Count,
        "HubSpot or Upso answers 429 Too Many Requests, by vendor and portal."
    );
    describe_histogram!(
        "vendor_http_request_duration_seconds",
        Unit::Seconds,
        "Time for HubSpot or Upso to answer one HTTP request, by vendor and portal."
    );

    // Plumbing.
    describe_counter!("cache_requests_total", Unit::Count, "Cache reads, by outcome (hit, miss, error).");
    describe_counter!("events_published_total", Unit::Count, "Events published to the bus, by type.");
    describe_counter!("events_consumed_total", Unit::Count, "Events handled by a consumer, by consumer and outcome.");

    // Configuration rollouts and drift.
    describe_counter!("rollouts_settled_total", Unit::Count, "Rollouts that ended, by final state.");
    describe_counter!("drift_detected_total", Unit::Count, "Portals found drifted from their revision, by policy.");
    describe_counter!(
        "drift_enforce_unconverged_total",
        Unit::Count,
        "Drift the enforce policy could not undo, left for a person to fix."
    );

    // HubSpot.
    describe_counter!(
        "hubspot_budget_waits_total",
        Unit::Count,
        "Waits for HubSpot rate-limit budget, by request kind."
    );
    describe_gauge!("hubspot_daily_budget_remaining", Unit::Count, "HubSpot API calls left today, by portal.");
    describe_counter!(
        "hubspot_deals_published_total",
        Unit::Count,
        "Deal changes published: read from HubSpot (upserted, deleted) or taken from a webhook's value (stage_changed), by kind."
    );
    describe_counter!(
        "hubspot_budget_deferred_total",
        Unit::Count,
        "HubSpot calls not sent because the portal's budget had no slot before the caller's deadline."
    );
    describe_counter!("hubspot_webhook_events_total", Unit::Count, "HubSpot webhook events received, by outcome.");
    describe_counter!(
        "hubspot_webhook_events_ingested_total",
        Unit::Count,
        "HubSpot change events (push webhooks and the webhooks journal) taken for deal re-reads, by outcome and feed."
    );
    describe_counter!("hubspot_journal_entries_total", Unit::Count, "Webhooks journal entries read and taken.");
    describe_counter!(
        "hubspot_journal_errors_total",
        Unit::Count,
        "Webhooks journal reads that failed (retried next poll)."
    );
    describe_counter!(
        "hubspot_journal_recoveries_total",
        Unit::Count,
        "Expired webhooks journal offsets recovered with a snapshot of every deal."
    );
    describe_counter!(
        "hubspot_journal_offset_at_risk_total",
        Unit::Count,
        "Journal reads whose offset may be close to leaving HubSpot's 3-day window."
    );
    describe_gauge!(
        "hubspot_journal_offset_age_seconds",
        Unit::Seconds,
        "How old a portal's journal offset may be (since its reader last caught up), by portal."
    );

    // Pipelines and upsell.
    describe_counter!(
        "pipeline_tracker_deal_versions_ingested_total",
        Unit::Count,
        "Deal versions recorded by the pipeline tracker, by outcome."
    );
    describe_counter!(
        "pipeline_tracker_deal_moves_ingested_total",
        Unit::Count,
        "Stage and pipeline moves from webhooks (deal.stage_changed) handled by the pipeline tracker before the deals' re-read."
    );
    describe_counter!(
        "pipeline_tracker_rollups_total",
        Unit::Count,
        "Company figures computed for a read: from the sums kept and updated per deal change (kept), or from the whole history (recomputed)."
    );
    describe_counter!(
        "pipeline_tracker_rollup_batches_total",
        Unit::Count,
        "A company's stored batches (this replica's or another's) offered to its kept sums: applied (counted per change counter), held back behind an earlier counter not yet here or being applied, or overdue (the company is recomputed)."
    );
    describe_counter!(
        "pipeline_tracker_announcements_total",
        Unit::Count,
        "Batches this pipeline-tracker replica announced to the others (sent, or failed: their watchers then wait for their poll)."
    );
    describe_counter!(
        "pipeline_tracker_announcements_heard_total",
        Unit::Count,
        "Batches other pipeline-tracker replicas announced, applied to this replica's kept sums and watchers."
    );
    describe_counter!("upsell_enrolled_total", Unit::Count, "Customers enrolled in an upsell cadence.");
    describe_counter!(
        "upsell_time_zone_fallback_total",
        Unit::Count,
        "Contacts whose CRM time zone is unknown: quiet hours read in the rule's default zone, the send window in the cadence's."
    );
}
