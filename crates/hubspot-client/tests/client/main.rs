//! Integration tests of `hubspot-client` against a tiny in-process axum fake of HubSpot.

mod fake_server;
mod properties;
mod rate_limits;
mod retries;
mod secrets;
