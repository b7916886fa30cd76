//! GoMark hubspot-sync service.
