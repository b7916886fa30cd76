//! GoMark gateway service.
