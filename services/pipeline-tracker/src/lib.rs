//! GoMark pipeline-tracker service.
