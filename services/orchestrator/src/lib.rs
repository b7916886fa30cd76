//! GoMark orchestrator service.
