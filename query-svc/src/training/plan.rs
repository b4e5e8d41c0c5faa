//! A plan as the read side keeps it: one document per plan, folded from its events, and the
//! views built from it (completion per plan, per block and per ISO week). Pure: the projection
//! (current state) and GetPlanAsOf (a past state, folded again from the stored events) share
//! this one fold.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    events::{Effort, TrainingPlanEvent, WorkoutKind},
    proto::{timestamp, training::v1 as pb},
};
use uuid::Uuid;

/// One plan, with everything its views show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDoc {
    pub plan_id: Uuid,
    pub athlete_id: Uuid,
    pub name: String,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub position: i64,
    /// By first day (blocks do not overlap).
    pub blocks: Vec<BlockDoc>,
    /// In the order scheduled.
    pub workouts: Vec<WorkoutDoc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockDoc {
    pub block_id: Uuid,
    pub name: String,
    pub focus: String,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkoutDoc {
    pub workout_id: Uuid,
    pub block_id: Uuid,
    pub on: NaiveDate,
    pub kind: WorkoutKind,
    pub planned: Effort,
    pub status: WorkoutStatus,
    pub actual: Option<Effort>,
    pub skip_reason: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkoutStatus {
    Scheduled,
    Completed,
    Skipped,
}

/// Where an event sits in its stream and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub version: i64,
    pub position: i64,
}

/// The plan after `event`. An event the aggregate could not have produced (one before the
/// plan's creation, a second creation, a workout that does not exist) is an error: the
/// projection dead-letters it.
pub fn fold(
    doc: Option<PlanDoc>,
    aggregate_id: Uuid,
    event: &TrainingPlanEvent,
    place: Place,
) -> Result<PlanDoc, String> {
    use TrainingPlanEvent as Ev;
    let at = shared::events::DomainEvent::occurred_at(event);
    let mut doc = match (event, doc) {
        (Ev::Created(e), None) => {
            if e.plan_id.as_uuid() != aggregate_id {
                return Err(format!("plan {aggregate_id} created as {}", e.plan_id));
            }
            PlanDoc {
                plan_id: aggregate_id,
                athlete_id: e.athlete_id.as_uuid(),
                name: e.name.as_str().to_owned(),
                starts_on: e.starts_on,
                ends_on: e.ends_on,
                archived_at: None,
                created_at: e.created_at,
                updated_at: e.created_at,
                version: place.version,
                position: place.position,
                blocks: Vec::new(),
                workouts: Vec::new(),
            }
        }
        (Ev::Created(_), Some(_)) => return Err(format!("plan {aggregate_id} created again")),
        (_, None) => {
            return Err(format!(
                "{} for plan {aggregate_id} that was never created",
                shared::events::DomainEvent::event_type(event)
            ));
        }
        (Ev::BlockAdded(e), Some(mut doc)) => {
            let block = BlockDoc {
                block_id: e.block_id.as_uuid(),
                name: e.name.as_str().to_owned(),
                focus: e.focus.as_str().to_owned(),
                starts_on: e.starts_on,
                ends_on: e.ends_on,
            };
            let at_index = doc
                .blocks
                .partition_point(|b| b.starts_on <= block.starts_on);
            doc.blocks.insert(at_index, block);
            doc
        }
        (Ev::WorkoutScheduled(e), Some(mut doc)) => {
            doc.workouts.push(WorkoutDoc {
                workout_id: e.workout_id.as_uuid(),
                block_id: e.block_id.as_uuid(),
                on: e.on,
                kind: e.kind,
                planned: e.planned,
                status: WorkoutStatus::Scheduled,
                actual: None,
                skip_reason: None,
                done_at: None,
            });
            doc
        }
        (Ev::WorkoutCompleted(e), Some(mut doc)) => {
            let workout = workout(&mut doc, e.workout_id.as_uuid())?;
            workout.status = WorkoutStatus::Completed;
            workout.actual = Some(e.actual);
            workout.done_at = Some(e.completed_at);
            doc
        }
        (Ev::WorkoutSkipped(e), Some(mut doc)) => {
            let workout = workout(&mut doc, e.workout_id.as_uuid())?;
            workout.status = WorkoutStatus::Skipped;
            workout.skip_reason = Some(e.reason.as_str().to_owned());
            workout.done_at = Some(e.skipped_at);
            doc
        }
        (Ev::Archived(e), Some(mut doc)) => {
            doc.archived_at = Some(e.archived_at);
            doc
        }
    };
    doc.version = place.version;
    doc.position = place.position;
    doc.updated_at = at;
    Ok(doc)
}

fn workout(doc: &mut PlanDoc, workout_id: Uuid) -> Result<&mut WorkoutDoc, String> {
    let plan_id = doc.plan_id;
    doc.workouts
        .iter_mut()
        .find(|w| w.workout_id == workout_id)
        .ok_or_else(|| format!("workout {workout_id} of plan {plan_id} was never scheduled"))
}

/// Completion figures over some workouts.
pub fn completion<'a>(workouts: impl IntoIterator<Item = &'a WorkoutDoc>) -> pb::Completion {
    let mut figures = pb::Completion::default();
    for workout in workouts {
        figures.workouts += 1;
        figures.planned_minutes += u64::from(workout.planned.minutes.unwrap_or(0));
        figures.planned_meters += u64::from(workout.planned.meters.unwrap_or(0));
        match workout.status {
            WorkoutStatus::Scheduled => figures.open += 1,
            WorkoutStatus::Skipped => figures.skipped += 1,
            WorkoutStatus::Completed => {
                figures.completed += 1;
                let actual = workout.actual.unwrap_or_default();
                figures.actual_minutes += u64::from(actual.minutes.unwrap_or(0));
                figures.actual_meters += u64::from(actual.meters.unwrap_or(0));
            }
        }
    }
    figures.completed_percent = (figures.completed * 100)
        .checked_div(figures.workouts)
        .unwrap_or(0);
    figures
}

/// The Monday that starts `day`'s ISO week.
pub fn week_start(day: NaiveDate) -> NaiveDate {
    let back = u64::from(day.weekday().num_days_from_monday());
    day.checked_sub_days(Days::new(back)).unwrap_or(day)
}

fn date(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn kind(kind: WorkoutKind) -> pb::WorkoutKind {
    match kind {
        WorkoutKind::Run => pb::WorkoutKind::Run,
        WorkoutKind::Ride => pb::WorkoutKind::Ride,
        WorkoutKind::Swim => pb::WorkoutKind::Swim,
        WorkoutKind::Strength => pb::WorkoutKind::Strength,
        WorkoutKind::Mobility => pb::WorkoutKind::Mobility,
    }
}

fn effort(effort: Effort) -> pb::Effort {
    pb::Effort {
        minutes: effort.minutes.unwrap_or(0),
        meters: effort.meters.unwrap_or(0),
    }
}

impl PlanDoc {
    fn status(&self) -> pb::PlanStatus {
        if self.archived_at.is_some() {
            pb::PlanStatus::Archived
        } else {
            pb::PlanStatus::Active
        }
    }

    /// The stored status, as the list filters on it.
    pub fn status_name(&self) -> &'static str {
        status_name(self.status())
    }

    /// The view GetPlan and GetPlanAsOf return.
    pub fn view(&self) -> pb::PlanView {
        let blocks = self
            .blocks
            .iter()
            .map(|block| pb::BlockView {
                block_id: block.block_id.to_string(),
                name: block.name.clone(),
                focus: block.focus.clone(),
                starts_on: date(block.starts_on),
                ends_on: date(block.ends_on),
                completion: Some(completion(
                    self.workouts
                        .iter()
                        .filter(|w| w.block_id == block.block_id),
                )),
            })
            .collect();
        let mut by_day: Vec<&WorkoutDoc> = self.workouts.iter().collect();
        // Stable: workouts of one day stay in the order scheduled.
        by_day.sort_by_key(|w| w.on);
        let mut weeks: BTreeMap<NaiveDate, Vec<&WorkoutDoc>> = BTreeMap::new();
        for workout in &by_day {
            weeks
                .entry(week_start(workout.on))
                .or_default()
                .push(workout);
        }
        pb::PlanView {
            plan_id: self.plan_id.to_string(),
            athlete_id: self.athlete_id.to_string(),
            name: self.name.clone(),
            starts_on: date(self.starts_on),
            ends_on: date(self.ends_on),
            status: self.status() as i32,
            blocks,
            workouts: by_day
                .iter()
                .map(|w| pb::WorkoutView {
                    workout_id: w.workout_id.to_string(),
                    block_id: w.block_id.to_string(),
                    on: date(w.on),
                    kind: kind(w.kind) as i32,
                    planned: Some(effort(w.planned)),
                    status: match w.status {
                        WorkoutStatus::Scheduled => pb::WorkoutStatus::Scheduled,
                        WorkoutStatus::Completed => pb::WorkoutStatus::Completed,
                        WorkoutStatus::Skipped => pb::WorkoutStatus::Skipped,
                    } as i32,
                    actual: w.actual.map(effort),
                    skip_reason: w.skip_reason.clone().unwrap_or_default(),
                    done_at: w.done_at.map(timestamp),
                })
                .collect(),
            completion: Some(completion(&self.workouts)),
            weeks: weeks
                .into_iter()
                .map(|(monday, workouts)| pb::WeekView {
                    week_starts_on: date(monday),
                    completion: Some(completion(workouts)),
                })
                .collect(),
            version: u64::try_from(self.version).unwrap_or(0),
            position: u64::try_from(self.position).unwrap_or(0),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            archived_at: self.archived_at.map(timestamp),
        }
    }

    /// The summary ListAthletePlans returns.
    pub fn summary(&self) -> pb::PlanSummary {
        pb::PlanSummary {
            plan_id: self.plan_id.to_string(),
            athlete_id: self.athlete_id.to_string(),
            name: self.name.clone(),
            starts_on: date(self.starts_on),
            ends_on: date(self.ends_on),
            status: self.status() as i32,
            blocks: u32::try_from(self.blocks.len()).unwrap_or(u32::MAX),
            completion: Some(completion(&self.workouts)),
            version: u64::try_from(self.version).unwrap_or(0),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
        }
    }
}

/// The stored name of a plan status (the list's filter), None for UNSPECIFIED.
pub fn status_name(status: pb::PlanStatus) -> &'static str {
    match status {
        pb::PlanStatus::Archived => "archived",
        pb::PlanStatus::Active | pb::PlanStatus::Unspecified => "active",
    }
}

/// One line of a plan's timeline, in English.
pub fn describe(event: &TrainingPlanEvent) -> String {
    use TrainingPlanEvent as Ev;
    let effort = |e: &Effort| match (e.minutes, e.meters) {
        (Some(min), Some(m)) => format!("{min} min, {m} m"),
        (Some(min), None) => format!("{min} min"),
        (None, Some(m)) => format!("{m} m"),
        (None, None) => "nothing".to_owned(),
    };
    let kind = |k: WorkoutKind| match k {
        WorkoutKind::Run => "Run",
        WorkoutKind::Ride => "Ride",
        WorkoutKind::Swim => "Swim",
        WorkoutKind::Strength => "Strength session",
        WorkoutKind::Mobility => "Mobility session",
    };
    match event {
        Ev::Created(e) => format!(
            "Plan \"{}\" created for {} to {}",
            e.name.as_str(),
            date(e.starts_on),
            date(e.ends_on)
        ),
        Ev::BlockAdded(e) => format!(
            "Block \"{}\" added for {} to {}",
            e.name.as_str(),
            date(e.starts_on),
            date(e.ends_on)
        ),
        Ev::WorkoutScheduled(e) => format!(
            "{} on {} scheduled: {}",
            kind(e.kind),
            date(e.on),
            effort(&e.planned)
        ),
        Ev::WorkoutCompleted(e) => {
            format!("Workout {} completed: {}", e.workout_id, effort(&e.actual))
        }
        Ev::WorkoutSkipped(e) => {
            format!("Workout {} skipped: {}", e.workout_id, e.reason.as_str())
        }
        Ev::Archived(_) => "Plan archived".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use shared::{
        events::{
            PlanArchived, PlanCreated, TrainingBlockAdded, WorkoutCompleted, WorkoutScheduled,
            WorkoutSkipped,
        },
        values::{
            AthleteId, BlockFocus, BlockId, BlockName, PlanId, PlanName, SkipReason, WorkoutId,
        },
    };

    use super::*;

    fn day(d: &str) -> NaiveDate {
        NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()
    }

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, hour, 0, 0).unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn events() -> Vec<TrainingPlanEvent> {
        use TrainingPlanEvent as Ev;
        let block = |n, from, to| {
            Ev::BlockAdded(TrainingBlockAdded {
                block_id: BlockId::from_uuid(id(n)),
                name: BlockName::parse(&format!("Block {n}")).unwrap(),
                focus: BlockFocus::parse("").unwrap(),
                starts_on: day(from),
                ends_on: day(to),
                added_at: at(9),
            })
        };
        let workout = |n, block, on, minutes| {
            Ev::WorkoutScheduled(WorkoutScheduled {
                workout_id: WorkoutId::from_uuid(id(n)),
                block_id: BlockId::from_uuid(id(block)),
                on: day(on),
                kind: WorkoutKind::Run,
                planned: Effort {
                    minutes: Some(minutes),
                    meters: None,
                },
                scheduled_at: at(10),
            })
        };
        vec![
            Ev::Created(PlanCreated {
                plan_id: PlanId::from_uuid(id(1)),
                athlete_id: AthleteId::from_uuid(id(2)),
                name: PlanName::parse("Spring").unwrap(),
                starts_on: day("2027-01-04"),
                ends_on: day("2027-01-31"),
                created_at: at(8),
            }),
            // Added out of date order: the view lists blocks by first day.
            block(21, "2027-01-18", "2027-01-31"),
            block(20, "2027-01-04", "2027-01-17"),
            workout(30, 20, "2027-01-05", 40),
            workout(31, 20, "2027-01-10", 60),
            workout(32, 21, "2027-01-18", 50),
            Ev::WorkoutCompleted(WorkoutCompleted {
                workout_id: WorkoutId::from_uuid(id(30)),
                actual: Effort {
                    minutes: Some(42),
                    meters: Some(8000),
                },
                completed_at: at(11),
            }),
            Ev::WorkoutSkipped(WorkoutSkipped {
                workout_id: WorkoutId::from_uuid(id(31)),
                reason: SkipReason::parse("sick").unwrap(),
                skipped_at: at(12),
            }),
            Ev::Archived(PlanArchived {
                archived_at: at(13),
            }),
        ]
    }

    fn folded(events: &[TrainingPlanEvent]) -> Result<PlanDoc, String> {
        let mut doc = None;
        for (n, event) in events.iter().enumerate() {
            let place = Place {
                version: n as i64 + 1,
                position: 100 + n as i64,
            };
            doc = Some(fold(doc, id(1), event, place)?);
        }
        doc.ok_or_else(|| "no events".to_owned())
    }

    #[test]
    fn the_view_has_figures_per_plan_block_and_week() {
        let view = folded(&events()).unwrap().view();
        assert_eq!(view.status, pb::PlanStatus::Archived as i32);
        assert_eq!((view.version, view.position), (9, 108));
        let blocks: Vec<&str> = view.blocks.iter().map(|b| b.starts_on.as_str()).collect();
        assert_eq!(blocks, ["2027-01-04", "2027-01-18"]);
        let plan = view.completion.unwrap();
        assert_eq!(
            (plan.workouts, plan.completed, plan.skipped, plan.open),
            (3, 1, 1, 1)
        );
        assert_eq!(plan.completed_percent, 33);
        assert_eq!((plan.planned_minutes, plan.actual_minutes), (150, 42));
        assert_eq!((plan.planned_meters, plan.actual_meters), (0, 8000));
        let first = view.blocks[0].completion.unwrap();
        assert_eq!((first.workouts, first.completed, first.skipped), (2, 1, 1));
        assert_eq!(first.completed_percent, 50);
        // 2027-01-05 is a Tuesday and 2027-01-10 a Sunday of the same week; 01-18 a Monday.
        let weeks: Vec<(&str, u32)> = view
            .weeks
            .iter()
            .map(|w| (w.week_starts_on.as_str(), w.completion.unwrap().workouts))
            .collect();
        assert_eq!(weeks, [("2027-01-04", 2), ("2027-01-18", 1)]);
        let skipped = &view.workouts[1];
        assert_eq!(skipped.status, pb::WorkoutStatus::Skipped as i32);
        assert_eq!(skipped.skip_reason, "sick");
        assert!(skipped.actual.is_none());
    }

    #[test]
    fn events_the_aggregate_cannot_produce_are_refused() {
        let all = events();
        assert!(folded(&all[1..]).unwrap_err().contains("never created"));
        let twice = [all[0].clone(), all[0].clone()];
        assert!(folded(&twice).unwrap_err().contains("created again"));
        let unscheduled = [all[0].clone(), all[6].clone()];
        assert!(
            folded(&unscheduled)
                .unwrap_err()
                .contains("never scheduled")
        );
    }

    #[test]
    fn weeks_start_on_monday() {
        assert_eq!(week_start(day("2027-01-10")), day("2027-01-04"));
        assert_eq!(week_start(day("2027-01-04")), day("2027-01-04"));
        assert_eq!(week_start(day("2027-01-01")), day("2026-12-28"));
    }

    #[test]
    fn an_empty_plan_has_zero_figures_and_no_weeks() {
        let view = folded(&events()[..1]).unwrap().view();
        assert_eq!(view.completion.unwrap(), pb::Completion::default());
        assert!(view.weeks.is_empty() && view.blocks.is_empty());
        assert_eq!(view.status, pb::PlanStatus::Active as i32);
    }
}
