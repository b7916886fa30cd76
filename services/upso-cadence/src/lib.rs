//! GoMark upso-cadence service.
