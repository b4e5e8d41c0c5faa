//! A training plan (the seed tutorial's aggregate, a second bounded context beside the
//! pizzeria): a coach draws up a plan for an athlete over a date range, splits it into blocks,
//! schedules workouts on days of the blocks; the athlete completes or skips each workout once;
//! an archived plan changes no more.
//!
//! The rules, as `decide` checks them:
//! - A plan has a name, an athlete and a date range whose end is not before its start.
//! - A block lies inside the plan's range, its end not before its start, and overlaps no other
//!   block (ranges are inclusive: a block may start the day after another ends).
//! - A workout is scheduled on a day of exactly one block, with a kind and a planned duration
//!   or distance (at least one of them above zero).
//! - A workout is completed (with an actual duration or distance) or skipped (with a reason),
//!   once.
//! - Block and workout ids are unique within the plan.
//! - Once archived, every command but archiving is refused; archiving again changes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    events::{
        Effort, PlanArchived, PlanCreated, TrainingBlockAdded, TrainingPlanEvent, WorkoutCompleted,
        WorkoutKind, WorkoutScheduled, WorkoutSkipped,
    },
    values::{AthleteId, BlockFocus, BlockId, BlockName, PlanId, PlanName, SkipReason, WorkoutId},
};

use crate::eventsourcing::{Aggregate, DomainError};

/// What `decide` needs to know about a plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingPlan {
    /// `None` until `PlanCreated`.
    pub plan: Option<Plan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub athlete_id: AthleteId,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
    pub blocks: Vec<Block>,
    pub workouts: BTreeMap<WorkoutId, WorkoutState>,
    pub archived: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub block_id: BlockId,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
}

/// Where a workout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkoutState {
    Scheduled,
    Completed,
    Skipped,
}

/// Commands on a training plan. Times come from the application layer.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingPlanCommand {
    CreatePlan {
        plan_id: PlanId,
        athlete_id: AthleteId,
        name: PlanName,
        starts_on: NaiveDate,
        ends_on: NaiveDate,
        at: DateTime<Utc>,
    },
    AddTrainingBlock {
        block_id: BlockId,
        name: BlockName,
        focus: BlockFocus,
        starts_on: NaiveDate,
        ends_on: NaiveDate,
        at: DateTime<Utc>,
    },
    ScheduleWorkout {
        workout_id: WorkoutId,
        on: NaiveDate,
        kind: WorkoutKind,
        planned: Effort,
        at: DateTime<Utc>,
    },
    CompleteWorkout {
        workout_id: WorkoutId,
        actual: Effort,
        at: DateTime<Utc>,
    },
    SkipWorkout {
        workout_id: WorkoutId,
        reason: SkipReason,
        at: DateTime<Utc>,
    },
    ArchivePlan {
        at: DateTime<Utc>,
    },
}

/// The rule a refused training plan command broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrainingPlanError {
    #[error("training plan not found")]
    PlanNotFound,
    #[error("training plan already exists")]
    PlanAlreadyExists,
    #[error("training plan is archived")]
    PlanArchived,
    #[error("ends before it starts")]
    EndsBeforeItStarts,
    #[error("block lies outside the plan's dates ({starts_on} to {ends_on})")]
    BlockOutsidePlan {
        starts_on: NaiveDate,
        ends_on: NaiveDate,
    },
    #[error("block overlaps block {0}")]
    BlocksOverlap(BlockId),
    #[error("block {0} already exists")]
    BlockAlreadyExists(BlockId),
    #[error("no block of the plan holds {0}")]
    NoBlockOnThatDay(NaiveDate),
    #[error("a workout needs a duration or a distance above zero")]
    NoEffortGiven,
    #[error("workout {0} already exists")]
    WorkoutAlreadyExists(WorkoutId),
    #[error("workout {0} not found")]
    WorkoutNotFound(WorkoutId),
    #[error("workout {0} was already completed or skipped")]
    WorkoutAlreadyDone(WorkoutId),
}

impl DomainError for TrainingPlanError {
    fn is_not_found(&self) -> bool {
        matches!(
            self,
            TrainingPlanError::PlanNotFound | TrainingPlanError::WorkoutNotFound(_)
        )
    }
}

impl Aggregate for TrainingPlan {
    const STATE_SCHEMA_VERSION: u32 = 1;

    type Command = TrainingPlanCommand;
    type Event = TrainingPlanEvent;
    type Error = TrainingPlanError;

    fn decide(
        &self,
        command: &TrainingPlanCommand,
    ) -> Result<Vec<TrainingPlanEvent>, TrainingPlanError> {
        use TrainingPlanCommand as C;
        use TrainingPlanError as E;
        use TrainingPlanEvent as Ev;
        let plan = match (command, &self.plan) {
            (
                C::CreatePlan {
                    plan_id,
                    athlete_id,
                    name,
                    starts_on,
                    ends_on,
                    at,
                },
                None,
            ) => {
                if ends_on < starts_on {
                    return Err(E::EndsBeforeItStarts);
                }
                return Ok(vec![Ev::Created(PlanCreated {
                    plan_id: *plan_id,
                    athlete_id: *athlete_id,
                    name: name.clone(),
                    starts_on: *starts_on,
                    ends_on: *ends_on,
                    created_at: *at,
                })]);
            }
            (C::CreatePlan { .. }, Some(_)) => return Err(E::PlanAlreadyExists),
            (_, None) => return Err(E::PlanNotFound),
            (C::ArchivePlan { .. }, Some(plan)) if plan.archived => return Ok(vec![]),
            (_, Some(plan)) if plan.archived => return Err(E::PlanArchived),
            (_, Some(plan)) => plan,
        };
        match command {
            C::CreatePlan { .. } => Err(E::PlanAlreadyExists),
            C::AddTrainingBlock {
                block_id,
                name,
                focus,
                starts_on,
                ends_on,
                at,
            } => {
                if ends_on < starts_on {
                    return Err(E::EndsBeforeItStarts);
                }
                if *starts_on < plan.starts_on || *ends_on > plan.ends_on {
                    return Err(E::BlockOutsidePlan {
                        starts_on: plan.starts_on,
                        ends_on: plan.ends_on,
                    });
                }
                if plan.blocks.iter().any(|b| b.block_id == *block_id) {
                    return Err(E::BlockAlreadyExists(*block_id));
                }
                if let Some(other) = plan
                    .blocks
                    .iter()
                    .find(|b| b.starts_on <= *ends_on && *starts_on <= b.ends_on)
                {
                    return Err(E::BlocksOverlap(other.block_id));
                }
                Ok(vec![Ev::BlockAdded(TrainingBlockAdded {
                    block_id: *block_id,
                    name: name.clone(),
                    focus: focus.clone(),
                    starts_on: *starts_on,
                    ends_on: *ends_on,
                    added_at: *at,
                })])
            }
            C::ScheduleWorkout {
                workout_id,
                on,
                kind,
                planned,
                at,
            } => {
                if plan.workouts.contains_key(workout_id) {
                    return Err(E::WorkoutAlreadyExists(*workout_id));
                }
                let block = plan
                    .blocks
                    .iter()
                    .find(|b| b.starts_on <= *on && *on <= b.ends_on)
                    .ok_or(E::NoBlockOnThatDay(*on))?;
                if !planned.is_given() {
                    return Err(E::NoEffortGiven);
                }
                Ok(vec![Ev::WorkoutScheduled(WorkoutScheduled {
                    workout_id: *workout_id,
                    block_id: block.block_id,
                    on: *on,
                    kind: *kind,
                    planned: *planned,
                    scheduled_at: *at,
                })])
            }
            C::CompleteWorkout {
                workout_id,
                actual,
                at,
            } => {
                open_workout(plan, *workout_id)?;
                if !actual.is_given() {
                    return Err(E::NoEffortGiven);
                }
                Ok(vec![Ev::WorkoutCompleted(WorkoutCompleted {
                    workout_id: *workout_id,
                    actual: *actual,
                    completed_at: *at,
                })])
            }
            C::SkipWorkout {
                workout_id,
                reason,
                at,
            } => {
                open_workout(plan, *workout_id)?;
                Ok(vec![Ev::WorkoutSkipped(WorkoutSkipped {
                    workout_id: *workout_id,
                    reason: reason.clone(),
                    skipped_at: *at,
                })])
            }
            C::ArchivePlan { at } => Ok(vec![Ev::Archived(PlanArchived { archived_at: *at })]),
        }
    }

    fn evolve(mut self, event: &TrainingPlanEvent) -> Self {
        use TrainingPlanEvent as Ev;
        match (event, &mut self.plan) {
            (Ev::Created(e), _) => {
                self.plan = Some(Plan {
                    athlete_id: e.athlete_id,
                    starts_on: e.starts_on,
                    ends_on: e.ends_on,
                    blocks: Vec::new(),
                    workouts: BTreeMap::new(),
                    archived: false,
                });
            }
            (Ev::BlockAdded(e), Some(plan)) => plan.blocks.push(Block {
                block_id: e.block_id,
                starts_on: e.starts_on,
                ends_on: e.ends_on,
            }),
            (Ev::WorkoutScheduled(e), Some(plan)) => {
                plan.workouts.insert(e.workout_id, WorkoutState::Scheduled);
            }
            (Ev::WorkoutCompleted(e), Some(plan)) => {
                plan.workouts.insert(e.workout_id, WorkoutState::Completed);
            }
            (Ev::WorkoutSkipped(e), Some(plan)) => {
                plan.workouts.insert(e.workout_id, WorkoutState::Skipped);
            }
            (Ev::Archived(_), Some(plan)) => plan.archived = true,
            // Events before the plan exists cannot be produced by `decide`; evolve must accept
            // every stored fact, so they are ignored.
            (_, None) => {}
        }
        self
    }
}

/// The workout, if it exists and is neither completed nor skipped.
fn open_workout(plan: &Plan, workout_id: WorkoutId) -> Result<(), TrainingPlanError> {
    match plan.workouts.get(&workout_id) {
        None => Err(TrainingPlanError::WorkoutNotFound(workout_id)),
        Some(WorkoutState::Scheduled) => Ok(()),
        Some(_) => Err(TrainingPlanError::WorkoutAlreadyDone(workout_id)),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use TrainingPlanCommand as C;
    use TrainingPlanError as E;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2027, 1, d).unwrap()
    }

    fn block_id(n: u8) -> BlockId {
        BlockId::parse(&format!("0190b8f6-0000-7000-8000-0000000000b{n}")).unwrap()
    }

    fn workout_id(n: u8) -> WorkoutId {
        WorkoutId::parse(&format!("0190b8f6-0000-7000-8000-0000000000{n:02x}")).unwrap()
    }

    fn create() -> TrainingPlanCommand {
        C::CreatePlan {
            plan_id: PlanId::parse("0190b8f6-0000-7000-8000-000000000a01").unwrap(),
            athlete_id: AthleteId::parse("0190b8f6-0000-7000-8000-000000000a02").unwrap(),
            name: PlanName::parse("Spring marathon").unwrap(),
            starts_on: day(1),
            ends_on: day(28),
            at: at(),
        }
    }

    fn add_block(n: u8, from: u32, to: u32) -> TrainingPlanCommand {
        C::AddTrainingBlock {
            block_id: block_id(n),
            name: BlockName::parse("Base").unwrap(),
            focus: BlockFocus::parse("aerobic endurance").unwrap(),
            starts_on: day(from),
            ends_on: day(to),
            at: at(),
        }
    }

    fn minutes(m: u32) -> Effort {
        Effort {
            minutes: Some(m),
            meters: None,
        }
    }

    fn schedule(n: u8, on: u32) -> TrainingPlanCommand {
        C::ScheduleWorkout {
            workout_id: workout_id(n),
            on: day(on),
            kind: WorkoutKind::Run,
            planned: minutes(45),
            at: at(),
        }
    }

    /// Given `history` (commands that must succeed), when `command`: its outcome.
    fn given_when(
        history: &[TrainingPlanCommand],
        command: &TrainingPlanCommand,
    ) -> Result<Vec<TrainingPlanEvent>, TrainingPlanError> {
        let mut state = TrainingPlan::default();
        for earlier in history {
            let (next, _) = crate::eventsourcing::execute(state, earlier).expect("history applies");
            state = next;
        }
        state.decide(command)
    }

    #[test]
    fn a_plan_is_created_once_over_a_range_that_does_not_end_before_it_starts() {
        let created = given_when(&[], &create()).unwrap();
        assert!(matches!(created[..], [TrainingPlanEvent::Created(_)]));
        assert_eq!(
            given_when(&[create()], &create()),
            Err(E::PlanAlreadyExists)
        );
        let backwards = C::CreatePlan {
            plan_id: PlanId::generate(),
            athlete_id: AthleteId::generate(),
            name: PlanName::parse("x").unwrap(),
            starts_on: day(5),
            ends_on: day(4),
            at: at(),
        };
        assert_eq!(given_when(&[], &backwards), Err(E::EndsBeforeItStarts));
        assert_eq!(given_when(&[], &add_block(1, 1, 7)), Err(E::PlanNotFound));
        assert!(E::PlanNotFound.is_not_found());
    }

    #[test]
    fn blocks_lie_inside_the_plan_and_do_not_overlap() {
        let plan = [create(), add_block(1, 1, 7)];
        assert!(
            given_when(&plan, &add_block(2, 8, 14)).is_ok(),
            "the next day"
        );
        assert_eq!(
            given_when(&plan, &add_block(2, 7, 14)),
            Err(E::BlocksOverlap(block_id(1)))
        );
        assert_eq!(
            given_when(&plan, &add_block(1, 20, 21)),
            Err(E::BlockAlreadyExists(block_id(1)))
        );
        assert!(matches!(
            given_when(
                &[create()],
                &C::AddTrainingBlock {
                    block_id: block_id(3),
                    name: BlockName::parse("Taper").unwrap(),
                    focus: BlockFocus::parse("").unwrap(),
                    starts_on: day(20),
                    ends_on: NaiveDate::from_ymd_opt(2027, 2, 2).unwrap(),
                    at: at(),
                }
            ),
            Err(E::BlockOutsidePlan { .. })
        ));
        assert_eq!(
            given_when(&[create()], &add_block(3, 10, 9)),
            Err(E::EndsBeforeItStarts)
        );
    }

    #[test]
    fn a_workout_is_scheduled_on_a_day_of_a_block_with_an_effort() {
        let plan = [create(), add_block(1, 1, 7)];
        let scheduled = given_when(&plan, &schedule(1, 3)).unwrap();
        let [TrainingPlanEvent::WorkoutScheduled(e)] = &scheduled[..] else {
            panic!("{scheduled:?}");
        };
        assert_eq!(e.block_id, block_id(1), "the block holding the day");
        assert_eq!(
            given_when(&plan, &schedule(1, 10)),
            Err(E::NoBlockOnThatDay(day(10)))
        );
        let nothing = C::ScheduleWorkout {
            workout_id: workout_id(2),
            on: day(2),
            kind: WorkoutKind::Swim,
            planned: Effort {
                minutes: Some(0),
                meters: None,
            },
            at: at(),
        };
        assert_eq!(given_when(&plan, &nothing), Err(E::NoEffortGiven));
        let twice = [create(), add_block(1, 1, 7), schedule(1, 3)];
        assert_eq!(
            given_when(&twice, &schedule(1, 4)),
            Err(E::WorkoutAlreadyExists(workout_id(1)))
        );
    }

    #[test]
    fn a_workout_is_completed_or_skipped_once() {
        let plan = [create(), add_block(1, 1, 7), schedule(1, 3)];
        let complete = C::CompleteWorkout {
            workout_id: workout_id(1),
            actual: Effort {
                minutes: Some(50),
                meters: Some(10_000),
            },
            at: at(),
        };
        let skip = C::SkipWorkout {
            workout_id: workout_id(1),
            reason: SkipReason::parse("sick").unwrap(),
            at: at(),
        };
        assert!(given_when(&plan, &complete).is_ok());
        assert!(given_when(&plan, &skip).is_ok());
        let done = [
            create(),
            add_block(1, 1, 7),
            schedule(1, 3),
            complete.clone(),
        ];
        assert_eq!(
            given_when(&done, &skip),
            Err(E::WorkoutAlreadyDone(workout_id(1)))
        );
        assert_eq!(
            given_when(&done, &complete),
            Err(E::WorkoutAlreadyDone(workout_id(1)))
        );
        let unknown = C::SkipWorkout {
            workout_id: workout_id(9),
            reason: SkipReason::parse("sick").unwrap(),
            at: at(),
        };
        assert_eq!(
            given_when(&plan, &unknown),
            Err(E::WorkoutNotFound(workout_id(9)))
        );
        let empty = C::CompleteWorkout {
            workout_id: workout_id(1),
            actual: Effort::default(),
            at: at(),
        };
        assert_eq!(given_when(&plan, &empty), Err(E::NoEffortGiven));
    }

    #[test]
    fn an_archived_plan_changes_no_more() {
        let archived = [create(), add_block(1, 1, 7), C::ArchivePlan { at: at() }];
        assert_eq!(given_when(&archived, &schedule(1, 3)), Err(E::PlanArchived));
        assert_eq!(
            given_when(&archived, &add_block(2, 8, 9)),
            Err(E::PlanArchived)
        );
        assert_eq!(
            given_when(&archived, &C::ArchivePlan { at: at() }),
            Ok(vec![]),
            "archiving again records nothing"
        );
        assert_eq!(given_when(&archived, &create()), Err(E::PlanAlreadyExists));
    }

    fn command() -> impl Strategy<Value = TrainingPlanCommand> {
        prop_oneof![
            Just(create()),
            (0u8..4, 1u32..29, 0u32..10).prop_map(|(n, from, len)| add_block(
                n,
                from,
                (from + len).min(31)
            )),
            (0u8..6, 1u32..29).prop_map(|(n, on)| schedule(n, on)),
            (0u8..6, 0u32..60).prop_map(|(n, m)| C::CompleteWorkout {
                workout_id: workout_id(n),
                actual: minutes(m),
                at: at(),
            }),
            (0u8..6).prop_map(|n| C::SkipWorkout {
                workout_id: workout_id(n),
                reason: SkipReason::parse("rest").unwrap(),
                at: at(),
            }),
            Just(C::ArchivePlan { at: at() }),
        ]
    }

    proptest! {
        /// Whatever commands arrive, the state built incrementally equals the replay of the
        /// events recorded, every event round-trips through its stored form, and the rules
        /// hold in every state reached (blocks inside the plan and apart, workouts on a day of
        /// their block).
        #[test]
        fn replay_equals_incremental_state(commands in prop::collection::vec(command(), 0..40)) {
            let mut state = TrainingPlan::default();
            let mut events = Vec::new();
            for command in &commands {
                if let Ok((next, new)) = crate::eventsourcing::execute(state.clone(), command) {
                    state = next;
                    events.extend(new);
                }
            }
            prop_assert_eq!(&TrainingPlan::replay(&events), &state);
            for event in &events {
                let encoded = shared::events::DomainEvent::encode(event);
                let decoded = <TrainingPlanEvent as shared::events::DomainEvent>::decode(
                    encoded.event_type, encoded.schema_version, encoded.payload,
                ).unwrap();
                prop_assert_eq!(&decoded, event);
            }
            if let Some(plan) = &state.plan {
                for (i, a) in plan.blocks.iter().enumerate() {
                    prop_assert!(plan.starts_on <= a.starts_on && a.ends_on <= plan.ends_on);
                    for b in &plan.blocks[i + 1..] {
                        prop_assert!(a.ends_on < b.starts_on || b.ends_on < a.starts_on);
                    }
                }
            }
            for event in &events {
                if let TrainingPlanEvent::WorkoutScheduled(w) = event {
                    let plan = state.plan.as_ref().unwrap();
                    let block = plan.blocks.iter().find(|b| b.block_id == w.block_id).unwrap();
                    prop_assert!(block.starts_on <= w.on && w.on <= block.ends_on);
                }
            }
        }
    }
}
