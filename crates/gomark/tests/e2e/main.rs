//! End-to-end: the real services on port 0, driven over HTTP and gRPC as users would,
//! in embedded mode always and in distributed mode when Postgres, NATS and Redis are
//! configured (`GOMARK_TEST_*`).

mod authz;
mod budget;
mod config;
mod dashboard;
mod deals;
mod distributed;
mod drift;
mod embedded;
mod faults;
mod funnels;
mod journal;
mod metrics;
mod openapi;
mod pipeline_rules;
mod plan_apply;
mod reflection;
mod rollouts;
mod scenarios;
mod startup;
mod support;
mod upsell;
mod validation;
