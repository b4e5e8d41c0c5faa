//! query-svc: consumes the event log from NATS JetStream, projects it into read tables and serves
//! queries over gRPC.
//!
//! The core, which knows no pizzas:
//! - [`runtime`]: the projection runtime. Hosts any number of [`runtime::Projection`]s, fed by
//!   one durable consumer, each with its own watermark, dead letters, generation and rebuild.
//! - [`admin`]: operating the projections: status and lag, dead letters, rebuilds, health.
//! - [`grpc::consistency`]: read-your-writes for every query service.
//!
//! The pizzeria:
//! - [`projections`]: its read models (`read_model`, `order_timeline`), registered by name.
//! - [`store`]: the read database's migrations, and the queries over the pizzeria's tables.
//! - [`grpc`]: the QueryService and ProjectionAdminService adapters.
//!
//! Training plans, a second bounded context: [`training`] (its projection `training_plans`,
//! queries and TrainingPlanQueryService).
//!
//! And the edges: [`config`] (flags and environment) and [`startup`] ([`startup::App`], the
//! one entry point `main` and the tests share).

pub mod admin;
pub mod config;
pub mod grpc;
pub mod projections;
pub mod runtime;
pub mod startup;
pub mod store;
pub mod training;
