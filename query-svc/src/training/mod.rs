//! The read side of the training plans context, plugged into the core alone: a projection
//! registered at start-up, its migration (`0005_training_plans.sql`), its queries and its gRPC
//! service. Nothing in `runtime/`, `admin/` or the pizzeria's folders knows it exists.
//!
//! - [`plan`]: the pure fold from events to a plan document, and the views built from it.
//! - [`projection`]: [`TrainingPlans`], the projection `training_plans`.
//! - [`queries`]: the reads of its tables.
//! - [`service`]: the gRPC service TrainingPlanQueryService.

pub mod plan;
pub mod projection;
pub mod queries;
pub mod service;

pub use projection::TrainingPlans;
