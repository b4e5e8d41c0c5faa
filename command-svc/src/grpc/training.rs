//! `training.v1.TrainingPlanCommandService`: each request converted into a
//! [`TrainingPlanCommand`] (every bad field reported, as for the pizzeria's commands) and run on
//! the command path every context shares ([`Commands`]).

use chrono::{DateTime, NaiveDate, Utc};
use shared::{
    events::{Effort, WorkoutKind},
    proto::training::v1::{
        self as pb, training_plan_command_service_server::TrainingPlanCommandService,
    },
    values::{BlockFocus, BlockId, BlockName, PlanId, PlanName, SkipReason, ValueError, WorkoutId},
};
use tonic::{Request, Response, Status};

use super::{
    commands::Commands,
    fields::{Converted, FieldViolation, command_options, field, finish, given_or_new_id},
};
use crate::{
    domain::training_plan::{TrainingPlan, TrainingPlanCommand},
    eventsourcing::handler::CommandOutcome,
};

/// The longest workout a plan records, in minutes (a day).
const MAX_MINUTES: u32 = 24 * 60;
/// The longest workout a plan records, in meters.
const MAX_METERS: u32 = 1_000_000;

type Conversion = Result<Converted<PlanId, TrainingPlanCommand>, Vec<FieldViolation>>;

/// CreatePlan. An empty `plan_id` means the server assigns a new one.
pub fn create_plan(r: &pb::CreatePlanRequest, now: DateTime<Utc>) -> Conversion {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = given_or_new_id(
        &mut v,
        "plan_id",
        &r.plan_id,
        PlanId::parse,
        PlanId::generate,
    );
    let athlete_id = field(
        &mut v,
        "athlete_id",
        shared::values::AthleteId::parse(&r.athlete_id),
    );
    let name = field(&mut v, "name", PlanName::parse(&r.name));
    let starts_on = field(&mut v, "starts_on", date(&r.starts_on));
    let ends_on = field(&mut v, "ends_on", date(&r.ends_on));
    finish(v, || {
        let id = id?;
        Some(Converted {
            options,
            id,
            command: TrainingPlanCommand::CreatePlan {
                plan_id: id,
                athlete_id: athlete_id?,
                name: name?,
                starts_on: starts_on?,
                ends_on: ends_on?,
                at: now,
            },
        })
    })
}

/// AddTrainingBlock.
pub fn add_training_block(r: &pb::AddTrainingBlockRequest, now: DateTime<Utc>) -> Conversion {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "plan_id", PlanId::parse(&r.plan_id));
    let block_id = field(&mut v, "block_id", BlockId::parse(&r.block_id));
    let name = field(&mut v, "name", BlockName::parse(&r.name));
    let focus = field(&mut v, "focus", BlockFocus::parse(&r.focus));
    let starts_on = field(&mut v, "starts_on", date(&r.starts_on));
    let ends_on = field(&mut v, "ends_on", date(&r.ends_on));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: TrainingPlanCommand::AddTrainingBlock {
                block_id: block_id?,
                name: name?,
                focus: focus?,
                starts_on: starts_on?,
                ends_on: ends_on?,
                at: now,
            },
        })
    })
}

/// ScheduleWorkout.
pub fn schedule_workout(r: &pb::ScheduleWorkoutRequest, now: DateTime<Utc>) -> Conversion {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "plan_id", PlanId::parse(&r.plan_id));
    let workout_id = field(&mut v, "workout_id", WorkoutId::parse(&r.workout_id));
    let on = field(&mut v, "on", date(&r.on));
    let kind = field(&mut v, "kind", workout_kind(r.kind));
    let planned = effort(&mut v, "planned", r.planned.as_ref());
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: TrainingPlanCommand::ScheduleWorkout {
                workout_id: workout_id?,
                on: on?,
                kind: kind?,
                planned: planned?,
                at: now,
            },
        })
    })
}

/// CompleteWorkout.
pub fn complete_workout(r: &pb::CompleteWorkoutRequest, now: DateTime<Utc>) -> Conversion {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "plan_id", PlanId::parse(&r.plan_id));
    let workout_id = field(&mut v, "workout_id", WorkoutId::parse(&r.workout_id));
    let actual = effort(&mut v, "actual", r.actual.as_ref());
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: TrainingPlanCommand::CompleteWorkout {
                workout_id: workout_id?,
                actual: actual?,
                at: now,
            },
        })
    })
}

/// SkipWorkout.
pub fn skip_workout(r: &pb::SkipWorkoutRequest, now: DateTime<Utc>) -> Conversion {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "plan_id", PlanId::parse(&r.plan_id));
    let workout_id = field(&mut v, "workout_id", WorkoutId::parse(&r.workout_id));
    let reason = field(&mut v, "reason", SkipReason::parse(&r.reason));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: TrainingPlanCommand::SkipWorkout {
                workout_id: workout_id?,
                reason: reason?,
                at: now,
            },
        })
    })
}

/// ArchivePlan.
pub fn archive_plan(r: &pb::ArchivePlanRequest, now: DateTime<Utc>) -> Conversion {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "plan_id", PlanId::parse(&r.plan_id));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: TrainingPlanCommand::ArchivePlan { at: now },
        })
    })
}

/// A calendar day, "YYYY-MM-DD".
fn date(raw: &str) -> Result<NaiveDate, String> {
    if raw.is_empty() {
        return Err(ValueError::Empty.to_string());
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| "must be a date YYYY-MM-DD".to_owned())
}

fn workout_kind(raw: i32) -> Result<WorkoutKind, String> {
    match pb::WorkoutKind::try_from(raw) {
        Ok(pb::WorkoutKind::Run) => Ok(WorkoutKind::Run),
        Ok(pb::WorkoutKind::Ride) => Ok(WorkoutKind::Ride),
        Ok(pb::WorkoutKind::Swim) => Ok(WorkoutKind::Swim),
        Ok(pb::WorkoutKind::Strength) => Ok(WorkoutKind::Strength),
        Ok(pb::WorkoutKind::Mobility) => Ok(WorkoutKind::Mobility),
        Ok(pb::WorkoutKind::Unspecified) => Err(ValueError::Unspecified.to_string()),
        Err(_) => Err(format!("unknown value {raw}")),
    }
}

/// A required effort: each figure in range, at least one above zero (0 means not given).
fn effort(v: &mut Vec<FieldViolation>, path: &str, raw: Option<&pb::Effort>) -> Option<Effort> {
    let Some(raw) = raw else {
        v.push(FieldViolation::new(
            path,
            ValueError::Unspecified.to_string(),
        ));
        return None;
    };
    let bounded = |value: u32, max: u32| {
        (value <= max)
            .then_some(value)
            .ok_or(ValueError::OutOfRange {
                min: 0,
                max: i64::from(max),
            })
    };
    let minutes = field(
        v,
        &format!("{path}.minutes"),
        bounded(raw.minutes, MAX_MINUTES),
    );
    let meters = field(
        v,
        &format!("{path}.meters"),
        bounded(raw.meters, MAX_METERS),
    );
    let effort = Effort {
        minutes: minutes.filter(|m| *m > 0),
        meters: meters.filter(|m| *m > 0),
    };
    match (minutes, meters) {
        (Some(_), Some(_)) if !effort.is_given() => {
            v.push(FieldViolation::new(
                path,
                "needs minutes or meters above zero",
            ));
            None
        }
        (Some(_), Some(_)) => Some(effort),
        _ => None,
    }
}

/// Serves TrainingPlanCommandService over the command path.
#[derive(Debug, Clone)]
pub struct TrainingPlanCommandApi {
    commands: Commands,
}

impl TrainingPlanCommandApi {
    pub fn new(commands: Commands) -> Self {
        Self { commands }
    }
}

fn reply(outcome: CommandOutcome) -> Response<pb::CommandReply> {
    Response::new(pb::CommandReply {
        aggregate_id: outcome.aggregate_id.to_string(),
        version: outcome.version,
        position: outcome.position,
        replayed: outcome.replayed,
        events_appended: outcome.events_appended,
    })
}

#[tonic::async_trait]
impl TrainingPlanCommandService for TrainingPlanCommandApi {
    async fn create_plan(
        &self,
        request: Request<pb::CreatePlanRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let outcome = self
            .commands
            .command::<TrainingPlan, _, _>(request, "CreatePlan", create_plan)
            .await?;
        Ok(reply(outcome))
    }

    async fn add_training_block(
        &self,
        request: Request<pb::AddTrainingBlockRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let outcome = self
            .commands
            .command::<TrainingPlan, _, _>(request, "AddTrainingBlock", add_training_block)
            .await?;
        Ok(reply(outcome))
    }

    async fn schedule_workout(
        &self,
        request: Request<pb::ScheduleWorkoutRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let outcome = self
            .commands
            .command::<TrainingPlan, _, _>(request, "ScheduleWorkout", schedule_workout)
            .await?;
        Ok(reply(outcome))
    }

    async fn complete_workout(
        &self,
        request: Request<pb::CompleteWorkoutRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let outcome = self
            .commands
            .command::<TrainingPlan, _, _>(request, "CompleteWorkout", complete_workout)
            .await?;
        Ok(reply(outcome))
    }

    async fn skip_workout(
        &self,
        request: Request<pb::SkipWorkoutRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let outcome = self
            .commands
            .command::<TrainingPlan, _, _>(request, "SkipWorkout", skip_workout)
            .await?;
        Ok(reply(outcome))
    }

    async fn archive_plan(
        &self,
        request: Request<pb::ArchivePlanRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let outcome = self
            .commands
            .command::<TrainingPlan, _, _>(request, "ArchivePlan", archive_plan)
            .await?;
        Ok(reply(outcome))
    }
}

#[cfg(test)]
mod tests {
    //! Valid requests convert to the expected command; each kind of bad input is reported at
    //! its field path, all of them at once.

    use chrono::TimeZone;

    use super::*;

    const PLAN: &str = "0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d01";
    const ATHLETE: &str = "0190b8f6-0000-7000-8000-0000000000a1";
    const WORKOUT: &str = "0190b8f6-0000-7000-8000-0000000000b1";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap()
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn a_plan_converts_with_its_dates_and_a_server_chosen_id_when_none_is_given() {
        let converted = create_plan(
            &pb::CreatePlanRequest {
                athlete_id: ATHLETE.into(),
                name: "  Spring marathon ".into(),
                starts_on: "2027-01-04".into(),
                ends_on: "2027-04-25".into(),
                ..Default::default()
            },
            now(),
        )
        .unwrap();
        let TrainingPlanCommand::CreatePlan {
            plan_id,
            name,
            starts_on,
            ends_on,
            at,
            ..
        } = converted.command
        else {
            panic!("not a CreatePlan: {:?}", converted.command);
        };
        assert_eq!(plan_id, converted.id);
        assert_eq!(name.as_str(), "Spring marathon");
        assert_eq!(starts_on, NaiveDate::from_ymd_opt(2027, 1, 4).unwrap());
        assert_eq!(ends_on, NaiveDate::from_ymd_opt(2027, 4, 25).unwrap());
        assert_eq!(at, now());
    }

    #[test]
    fn every_bad_field_of_a_plan_is_reported_at_once() {
        let violations = create_plan(
            &pb::CreatePlanRequest {
                command_id: "nope".into(),
                plan_id: "not-a-uuid".into(),
                athlete_id: String::new(),
                name: " ".into(),
                starts_on: "2027-02-30".into(),
                ends_on: "04/25/2027".into(),
                ..Default::default()
            },
            now(),
        )
        .unwrap_err();
        assert_eq!(
            fields(&violations),
            [
                "command_id",
                "plan_id",
                "athlete_id",
                "name",
                "starts_on",
                "ends_on"
            ]
        );
    }

    #[test]
    fn a_workout_needs_a_kind_and_an_effort_in_range_with_something_above_zero() {
        let request = |kind: pb::WorkoutKind, planned: Option<pb::Effort>| {
            schedule_workout(
                &pb::ScheduleWorkoutRequest {
                    plan_id: PLAN.into(),
                    workout_id: WORKOUT.into(),
                    on: "2027-01-05".into(),
                    kind: kind as i32,
                    planned,
                    ..Default::default()
                },
                now(),
            )
        };
        let ok = request(
            pb::WorkoutKind::Run,
            Some(pb::Effort {
                minutes: 45,
                meters: 0,
            }),
        )
        .unwrap();
        assert!(matches!(
            ok.command,
            TrainingPlanCommand::ScheduleWorkout {
                kind: WorkoutKind::Run,
                planned: Effort {
                    minutes: Some(45),
                    meters: None
                },
                ..
            }
        ));
        let cases = [
            (
                pb::WorkoutKind::Unspecified,
                Some(pb::Effort::default()),
                vec!["kind", "planned"],
            ),
            (pb::WorkoutKind::Swim, None, vec!["planned"]),
            (
                pb::WorkoutKind::Ride,
                Some(pb::Effort {
                    minutes: MAX_MINUTES + 1,
                    meters: MAX_METERS + 1,
                }),
                vec!["planned.minutes", "planned.meters"],
            ),
        ];
        for (kind, planned, expected) in cases {
            let violations = request(kind, planned).unwrap_err();
            assert_eq!(fields(&violations), expected, "{kind:?} {planned:?}");
        }
    }

    #[test]
    fn completing_skipping_and_archiving_name_their_bad_fields() {
        let completed = complete_workout(
            &pb::CompleteWorkoutRequest {
                plan_id: PLAN.into(),
                workout_id: "x".into(),
                actual: Some(pb::Effort::default()),
                ..Default::default()
            },
            now(),
        )
        .unwrap_err();
        assert_eq!(fields(&completed), ["workout_id", "actual"]);
        let skipped = skip_workout(
            &pb::SkipWorkoutRequest {
                plan_id: PLAN.into(),
                workout_id: WORKOUT.into(),
                reason: String::new(),
                ..Default::default()
            },
            now(),
        )
        .unwrap_err();
        assert_eq!(fields(&skipped), ["reason"]);
        let archived = archive_plan(&pb::ArchivePlanRequest::default(), now()).unwrap_err();
        assert_eq!(fields(&archived), ["plan_id"]);
    }
}
