-- training_plans: the read side of the training plans context (query-svc/src/training), a
-- projection of its own with the runtime's bookkeeping (create_projection_schema, 0004).

SELECT create_projection_schema('training_plans');

-- One document per plan (training::plan::PlanDoc: blocks, workouts and their outcomes), with
-- the columns ListAthletePlans filters and orders on.
CREATE TABLE training_plans.plans (
    tenant_id  uuid        NOT NULL,
    plan_id    uuid        NOT NULL,
    athlete_id uuid        NOT NULL,
    status     text        NOT NULL CHECK (status IN ('active', 'archived')),
    created_at timestamptz NOT NULL,
    version    bigint      NOT NULL,
    doc        jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, plan_id)
);
CREATE INDEX plans_by_athlete
    ON training_plans.plans (tenant_id, athlete_id, created_at DESC, plan_id DESC);

-- Every event of every plan, upcast to its current schema: the timeline, and what
-- GetPlanAsOf folds again up to a past version.
CREATE TABLE training_plans.plan_events (
    tenant_id       uuid        NOT NULL,
    plan_id         uuid        NOT NULL,
    version         bigint      NOT NULL,
    global_position bigint      NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    description     text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    actor           text        NOT NULL,
    command_id      text        NOT NULL,
    details         jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, plan_id, version)
);

SELECT protect_tenant_tables('training_plans');

-- No training plan event can come before this version of query-svc: the projection starts
-- where read_model is, rather than reading the whole log to find none.
INSERT INTO training_plans.applied_events SELECT * FROM read_model.applied_events;
INSERT INTO training_plans.projector_state SELECT * FROM read_model.projector_state;
