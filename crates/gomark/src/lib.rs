//! GoMark in one process: all five services, SQLite in a data folder, the in-process bus
//! and cache, and the HubSpot simulator loaded with a demo portfolio. The very same service
//! code runs distributed; only the backends differ.

pub mod cli;
pub mod cluster;
mod demo;
mod embedded;
mod folder_lock;
mod sim_state;
pub mod upso;

pub use demo::{
    DEMO_COMPANIES, DRIFTED_COMPANY, DRIFTED_LABEL, DemoState, company_key, demo_token, seed_demo_portfolio,
};
pub use embedded::{Embedded, EmbeddedOptions};
