//! Training plans end to end, over gRPC only: a plan's whole life (created, filled, worked
//! through, read back as it is, as it was and as a timeline, archived), the rules refused with
//! their codes, another tenant's NOT_FOUND, and the projection `training_plans` rebuilt alone.
//! Like the pizzeria's scenarios they start both binaries, or run against a running stack
//! (`E2E_COMMAND_SVC_URL`, `E2E_QUERY_SVC_URL`), each in a tenant of its own.

use std::time::{Duration, Instant};

use e2e::stack::Stack;
use shared::proto::{
    training::v1::{
        self as pb, training_plan_command_service_client::TrainingPlanCommandServiceClient,
        training_plan_query_service_client::TrainingPlanQueryServiceClient,
    },
    v1::{self as admin, projection_admin_service_client::ProjectionAdminServiceClient},
};
use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// `message` as a request of `tenant` (authentication is off in these tests).
fn as_tenant<T>(tenant: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        shared::auth::TENANT_HEADER,
        MetadataValue::try_from(tenant).expect("a UUID is a header value"),
    );
    request
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("the call is refused").code()
}

struct Coach {
    stack: Stack,
    commands: TrainingPlanCommandServiceClient<Channel>,
    queries: TrainingPlanQueryServiceClient<Channel>,
}

impl Coach {
    async fn open() -> anyhow::Result<Self> {
        let stack = Stack::start().await?;
        Ok(Self {
            commands: TrainingPlanCommandServiceClient::new(stack.command_channel().await?),
            queries: TrainingPlanQueryServiceClient::new(stack.query_channel().await?),
            stack,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        self.stack.request(message)
    }

    async fn create(&mut self, athlete: &str, name: &str) -> anyhow::Result<(String, u64)> {
        let plan = id();
        let reply = self
            .commands
            .create_plan(self.request(pb::CreatePlanRequest {
                plan_id: plan.clone(),
                athlete_id: athlete.into(),
                name: name.into(),
                starts_on: "2027-01-04".into(),
                ends_on: "2027-01-31".into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        Ok((plan, reply.position))
    }

    async fn block(
        &mut self,
        plan: &str,
        block: &str,
        from: &str,
        to: &str,
    ) -> Result<pb::CommandReply, tonic::Status> {
        let request = self.request(pb::AddTrainingBlockRequest {
            plan_id: plan.into(),
            block_id: block.into(),
            name: format!("Block {from}"),
            focus: "aerobic endurance".into(),
            starts_on: from.into(),
            ends_on: to.into(),
            ..Default::default()
        });
        Ok(self
            .commands
            .add_training_block(request)
            .await?
            .into_inner())
    }

    async fn schedule(
        &mut self,
        plan: &str,
        workout: &str,
        on: &str,
        minutes: u32,
    ) -> Result<pb::CommandReply, tonic::Status> {
        let request = self.request(pb::ScheduleWorkoutRequest {
            plan_id: plan.into(),
            workout_id: workout.into(),
            on: on.into(),
            kind: pb::WorkoutKind::Run as i32,
            planned: Some(pb::Effort { minutes, meters: 0 }),
            ..Default::default()
        });
        Ok(self.commands.schedule_workout(request).await?.into_inner())
    }

    async fn complete(
        &mut self,
        plan: &str,
        workout: &str,
        minutes: u32,
    ) -> Result<pb::CommandReply, tonic::Status> {
        let request = self.request(pb::CompleteWorkoutRequest {
            plan_id: plan.into(),
            workout_id: workout.into(),
            actual: Some(pb::Effort {
                minutes,
                meters: 8000,
            }),
            ..Default::default()
        });
        Ok(self.commands.complete_workout(request).await?.into_inner())
    }

    async fn plan(&mut self, plan: &str, min_position: u64) -> anyhow::Result<pb::PlanView> {
        let request = self.request(pb::GetPlanRequest {
            plan_id: plan.into(),
            min_position,
        });
        Ok(self.queries.get_plan(request).await?.into_inner())
    }
}

#[tokio::test]
async fn a_plan_is_drawn_up_worked_through_and_read_back() -> anyhow::Result<()> {
    let mut coach = Coach::open().await?;
    let athlete = id();
    let (plan, _) = coach.create(&athlete, "Spring 10k").await?;
    let (base, build) = (id(), id());
    coach
        .block(&plan, &base, "2027-01-04", "2027-01-17")
        .await?;
    coach
        .block(&plan, &build, "2027-01-18", "2027-01-31")
        .await?;

    // The rules, each with its code, and nothing appended for any of them.
    let overlapping = coach.block(&plan, &id(), "2027-01-17", "2027-01-20").await;
    assert_eq!(code(overlapping), Code::FailedPrecondition);
    let outside = coach.block(&plan, &id(), "2027-01-01", "2027-01-03").await;
    assert_eq!(code(outside), Code::FailedPrecondition);

    let (easy, long, tempo) = (id(), id(), id());
    coach.schedule(&plan, &easy, "2027-01-05", 40).await?;
    coach.schedule(&plan, &long, "2027-01-10", 90).await?;
    coach.schedule(&plan, &tempo, "2027-01-19", 50).await?;
    let no_block = coach.schedule(&plan, &id(), "2027-02-01", 30).await;
    assert_eq!(code(no_block), Code::FailedPrecondition);
    let no_effort = coach.schedule(&plan, &id(), "2027-01-06", 0).await;
    assert_eq!(code(no_effort), Code::InvalidArgument);

    coach.complete(&plan, &easy, 42).await?;
    assert_eq!(
        code(coach.complete(&plan, &easy, 42).await),
        Code::FailedPrecondition,
        "a workout is completed once"
    );
    assert_eq!(
        code(coach.complete(&plan, &id(), 42).await),
        Code::NotFound,
        "an unknown workout"
    );
    let request = coach.request(pb::SkipWorkoutRequest {
        plan_id: plan.clone(),
        workout_id: long.clone(),
        reason: "a cold".into(),
        ..Default::default()
    });
    let skipped = coach.commands.skip_workout(request).await?.into_inner();
    assert_eq!((skipped.version, skipped.events_appended), (8, 1));

    // Read-your-writes with the last command's token.
    let view = coach.plan(&plan, skipped.position).await?;
    assert_eq!((view.version, view.position), (8, skipped.position));
    assert_eq!(view.status, pb::PlanStatus::Active as i32);
    let blocks: Vec<&str> = view.blocks.iter().map(|b| b.block_id.as_str()).collect();
    assert_eq!(blocks, [base.as_str(), build.as_str()]);
    let whole = view.completion.expect("plan figures");
    assert_eq!(
        (whole.workouts, whole.completed, whole.skipped, whole.open),
        (3, 1, 1, 1)
    );
    assert_eq!(
        (
            whole.completed_percent,
            whole.planned_minutes,
            whole.actual_minutes
        ),
        (33, 180, 42)
    );
    let first_block = view.blocks[0].completion.expect("block figures");
    assert_eq!((first_block.workouts, first_block.completed), (2, 1));
    let weeks: Vec<(&str, u32)> = view
        .weeks
        .iter()
        .map(|w| {
            (
                w.week_starts_on.as_str(),
                w.completion.unwrap_or_default().workouts,
            )
        })
        .collect();
    assert_eq!(weeks, [("2027-01-04", 2), ("2027-01-18", 1)]);
    let skipped_view = view
        .workouts
        .iter()
        .find(|w| w.workout_id == long)
        .expect("the skipped workout");
    assert_eq!(
        (skipped_view.status, skipped_view.skip_reason.as_str()),
        (pb::WorkoutStatus::Skipped as i32, "a cold")
    );

    // As it was after its blocks, and its timeline.
    let request = coach.request(pb::GetPlanAsOfRequest {
        plan_id: plan.clone(),
        as_of: Some(pb::get_plan_as_of_request::AsOf::Version(3)),
        min_position: skipped.position,
    });
    let past = coach.queries.get_plan_as_of(request).await?.into_inner();
    assert_eq!(
        (past.version, past.blocks.len(), past.workouts.len()),
        (3, 2, 0)
    );
    let request = coach.request(pb::GetPlanAsOfRequest {
        plan_id: plan.clone(),
        as_of: Some(pb::get_plan_as_of_request::AsOf::Version(0)),
        min_position: 0,
    });
    assert_eq!(
        code(coach.queries.get_plan_as_of(request).await),
        Code::NotFound
    );
    let request = coach.request(pb::GetPlanTimelineRequest {
        plan_id: plan.clone(),
        min_position: skipped.position,
    });
    let timeline = coach.queries.get_plan_timeline(request).await?.into_inner();
    let types: Vec<&str> = timeline
        .entries
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "PlanCreated",
            "TrainingBlockAdded",
            "TrainingBlockAdded",
            "WorkoutScheduled",
            "WorkoutScheduled",
            "WorkoutScheduled",
            "WorkoutCompleted",
            "WorkoutSkipped"
        ]
    );

    // Archived: idempotent by command id, a no-op the second time, and nothing changes after.
    let archive = pb::ArchivePlanRequest {
        command_id: id(),
        plan_id: plan.clone(),
        ..Default::default()
    };
    let archived = coach
        .commands
        .archive_plan(coach.request(archive.clone()))
        .await?
        .into_inner();
    let replayed = coach
        .commands
        .archive_plan(coach.request(archive))
        .await?
        .into_inner();
    assert!(replayed.replayed && replayed.version == archived.version);
    let again = coach
        .commands
        .archive_plan(coach.request(pb::ArchivePlanRequest {
            plan_id: plan.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(
        (again.events_appended, again.version),
        (0, archived.version)
    );
    assert_eq!(
        code(coach.complete(&plan, &tempo, 50).await),
        Code::FailedPrecondition
    );
    let view = coach.plan(&plan, archived.position).await?;
    assert_eq!(view.status, pb::PlanStatus::Archived as i32);
    assert!(view.archived_at.is_some());
    coach.stack.finish().await
}

/// Another tenant's plan does not exist for a caller: reads and commands answer NOT_FOUND, and
/// lists leave it out.
#[tokio::test]
async fn another_tenants_plan_is_not_found() -> anyhow::Result<()> {
    let mut coach = Coach::open().await?;
    let athlete = id();
    let (plan, position) = coach.create(&athlete, "Mine").await?;
    coach.plan(&plan, position).await?;

    let stranger = id();
    let read = coach
        .queries
        .get_plan(as_tenant(
            &stranger,
            pb::GetPlanRequest {
                plan_id: plan.clone(),
                min_position: position,
            },
        ))
        .await;
    assert_eq!(code(read), Code::NotFound);
    let timeline_request = as_tenant(
        &stranger,
        pb::GetPlanTimelineRequest {
            plan_id: plan.clone(),
            min_position: position,
        },
    );
    let timeline = coach.queries.get_plan_timeline(timeline_request).await;
    assert_eq!(code(timeline), Code::NotFound);
    let list_request = as_tenant(
        &stranger,
        pb::ListAthletePlansRequest {
            athlete_id: athlete.clone(),
            min_position: position,
            ..Default::default()
        },
    );
    let listed = coach
        .queries
        .list_athlete_plans(list_request)
        .await?
        .into_inner();
    assert!(listed.plans.is_empty(), "{listed:?}");
    let block_request = as_tenant(
        &stranger,
        pb::AddTrainingBlockRequest {
            plan_id: plan.clone(),
            block_id: id(),
            name: "Theirs".into(),
            starts_on: "2027-01-04".into(),
            ends_on: "2027-01-10".into(),
            ..Default::default()
        },
    );
    let command = coach.commands.add_training_block(block_request).await;
    assert_eq!(code(command), Code::NotFound);

    // The owner's plan is unchanged by it.
    assert_eq!(coach.plan(&plan, 0).await?.version, 1);
    coach.stack.finish().await
}

/// An athlete's plans come in keyset pages, newest first, with no repeats; a token is refused
/// with other filters.
#[tokio::test]
async fn an_athletes_plans_come_in_pages() -> anyhow::Result<()> {
    let mut coach = Coach::open().await?;
    let athlete = id();
    let mut created = Vec::new();
    let mut position = 0;
    for n in 0..5 {
        let (plan, at) = coach.create(&athlete, &format!("Plan {n}")).await?;
        created.push(plan);
        position = at;
    }
    coach.create(&id(), "Someone else's").await?;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = coach.request(pb::ListAthletePlansRequest {
            athlete_id: athlete.clone(),
            page_size: 2,
            page_token: token.clone(),
            min_position: position,
            ..Default::default()
        });
        let page = coach
            .queries
            .list_athlete_plans(request)
            .await?
            .into_inner();
        assert!(page.plans.len() <= 2);
        seen.extend(page.plans.into_iter().map(|p| p.plan_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    created.reverse();
    assert_eq!(seen, created, "newest first, every plan once");

    let request = coach.request(pb::ListAthletePlansRequest {
        athlete_id: athlete.clone(),
        page_size: 2,
        min_position: position,
        ..Default::default()
    });
    let first = coach
        .queries
        .list_athlete_plans(request)
        .await?
        .into_inner();
    let request = coach.request(pb::ListAthletePlansRequest {
        athlete_id: athlete.clone(),
        status: pb::PlanStatus::Archived as i32,
        page_token: first.next_page_token,
        ..Default::default()
    });
    assert_eq!(
        code(coach.queries.list_athlete_plans(request).await),
        Code::InvalidArgument
    );
    coach.stack.finish().await
}

/// Rebuilding `training_plans` alone gives the tables the incremental projection wrote, and
/// leaves the other projections' generations as they were.
#[tokio::test]
async fn the_training_projection_is_rebuilt_alone() -> anyhow::Result<()> {
    let mut coach = Coach::open().await?;
    let Some(read_url) = coach.stack.read_database_url().map(str::to_owned) else {
        // Against a running stack the read database is not ours to compare.
        anyhow::bail!("this test starts its own services: unset E2E_COMMAND_SVC_URL");
    };
    let (plan, _) = coach.create(&id(), "Rebuilt").await?;
    let block = id();
    coach
        .block(&plan, &block, "2027-01-04", "2027-01-31")
        .await?;
    let workout = id();
    coach.schedule(&plan, &workout, "2027-01-05", 30).await?;
    let done = coach.complete(&plan, &workout, 31).await?;
    coach.plan(&plan, done.position).await?;

    let pool = sqlx::PgPool::connect(&read_url).await?;
    let before = e2e::projection_dump(&pool, "training_plans").await?;
    let mut admin_client = ProjectionAdminServiceClient::new(coach.stack.query_channel().await?);
    let generations = |projections: &[admin::ProjectionStatus]| {
        projections
            .iter()
            .map(|p| (p.name.clone(), p.generation))
            .collect::<Vec<_>>()
    };
    let listed = admin_client
        .list_projections(admin::ListProjectionsRequest::default())
        .await?
        .into_inner()
        .projections;
    let started = admin_client
        .rebuild_projection(admin::RebuildProjectionRequest {
            name: "training_plans".into(),
        })
        .await?
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(60);
    let after_rebuild = loop {
        let projections = admin_client
            .list_projections(admin::ListProjectionsRequest::default())
            .await?
            .into_inner()
            .projections;
        let done = projections.iter().any(|p| {
            p.name == "training_plans" && p.generation == started.generation && p.rebuild.is_none()
        });
        if done {
            break projections;
        }
        anyhow::ensure!(Instant::now() < deadline, "rebuild not done after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expected: Vec<(String, u32)> = generations(&listed)
        .into_iter()
        .map(|(name, generation)| {
            let generation = if name == "training_plans" {
                started.generation
            } else {
                generation
            };
            (name, generation)
        })
        .collect();
    assert_eq!(generations(&after_rebuild), expected);
    assert_eq!(e2e::projection_dump(&pool, "training_plans").await?, before);
    assert_eq!(coach.plan(&plan, 0).await?.version, 4);
    pool.close().await;
    coach.stack.finish().await
}
