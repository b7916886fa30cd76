//! Integration tests of `hubspot-client` against a tiny in-process axum fake of HubSpot.

mod budget;
mod deals;
mod fake_server;
mod journal;
mod oauth;
mod pipelines;
mod properties;
mod property_batch;
mod rate_limits;
mod retries;
mod search;
mod secrets;
mod sync;
