//! Events of the `training_plan` aggregate (the second bounded context: an athlete's training
//! plan, its blocks and workouts).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{domain_events, occurred_at};
use crate::values::{AthleteId, BlockFocus, BlockId, PlanId, PlanName, SkipReason, WorkoutId};

domain_events! {
    /// Everything that can happen to a training plan. Type names are stable forever.
    pub enum TrainingPlanEvent for "training_plan" upcast by (super::upcasters::TRAINING_PLAN_UPCASTERS) {
        /// A coach drew up a plan for an athlete over a date range.
        Created(PlanCreated) = "PlanCreated" v 1,
        /// A block of the plan: a stretch of days with a focus.
        BlockAdded(TrainingBlockAdded) = "TrainingBlockAdded" v 1,
        /// A workout on a day of a block.
        WorkoutScheduled(WorkoutScheduled) = "WorkoutScheduled" v 1,
        /// The athlete did a scheduled workout.
        WorkoutCompleted(WorkoutCompleted) = "WorkoutCompleted" v 1,
        /// The athlete did not do a scheduled workout.
        WorkoutSkipped(WorkoutSkipped) = "WorkoutSkipped" v 1,
        /// The plan is done with: nothing about it changes any more.
        Archived(PlanArchived) = "PlanArchived" v 1,
    }
}

occurred_at! {
    PlanCreated => created_at,
    TrainingBlockAdded => added_at,
    WorkoutScheduled => scheduled_at,
    WorkoutCompleted => completed_at,
    WorkoutSkipped => skipped_at,
    PlanArchived => archived_at,
}

/// What kind of session a workout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkoutKind {
    Run,
    Ride,
    Swim,
    Strength,
    Mobility,
}

/// What a workout is planned to be, or was: a duration, a distance, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effort {
    pub minutes: Option<u32>,
    pub meters: Option<u32>,
}

impl Effort {
    /// Whether it says anything at all (a duration or a distance above zero).
    pub fn is_given(&self) -> bool {
        self.minutes.is_some_and(|m| m > 0) || self.meters.is_some_and(|m| m > 0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanCreated {
    pub plan_id: PlanId,
    pub athlete_id: AthleteId,
    pub name: PlanName,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingBlockAdded {
    pub block_id: BlockId,
    pub name: crate::values::BlockName,
    pub focus: BlockFocus,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
    pub added_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkoutScheduled {
    pub workout_id: WorkoutId,
    /// The block whose days hold `on`.
    pub block_id: BlockId,
    pub on: NaiveDate,
    pub kind: WorkoutKind,
    pub planned: Effort,
    pub scheduled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkoutCompleted {
    pub workout_id: WorkoutId,
    pub actual: Effort,
    pub completed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkoutSkipped {
    pub workout_id: WorkoutId,
    pub reason: SkipReason,
    pub skipped_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanArchived {
    pub archived_at: DateTime<Utc>,
}
