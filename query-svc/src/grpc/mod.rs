//! gRPC adapters of query-svc.

pub mod query_service;
