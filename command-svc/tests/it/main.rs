//! Integration tests of command-svc against the real Postgres at `DATABASE_URL`
//! (`#[sqlx::test]` gives each test a fresh database and drops it afterwards).

// A panic in a test helper is a test failure with a line number: unwrap is what we want here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod event_log;
mod helpers;
mod relay;
mod snapshots;
mod tenancy;
