//! GoMark's gRPC and event contracts, generated from `proto/` at build time.

#![allow(clippy::all, missing_docs)]

/// Encoded `FileDescriptorSet` of every GoMark proto, for gRPC reflection (without source
/// info: the comments are in `proto/`).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gomark_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("gomark.common.v1");
    }
}

pub mod config {
    pub mod v1 {
        tonic::include_proto!("gomark.config.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("gomark.events.v1");
    }
}

pub mod orchestrator {
    pub mod v1 {
        tonic::include_proto!("gomark.orchestrator.v1");
    }
}

pub mod hubspot_sync {
    pub mod v1 {
        tonic::include_proto!("gomark.hubspot_sync.v1");
    }
}

pub mod upso_cadence {
    pub mod v1 {
        tonic::include_proto!("gomark.upso_cadence.v1");
    }
}

pub mod pipeline_tracker {
    pub mod v1 {
        tonic::include_proto!("gomark.pipeline_tracker.v1");
    }
}

pub mod event_times;
pub mod json;
pub mod money;
pub mod time;

pub use prost_types::{Duration, Timestamp};
