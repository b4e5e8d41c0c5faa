#!/usr/bin/env bash
# The project's test command: prepares the machine, builds the service binaries the end-to-end
# tests start, then runs every test against the real Postgres and NATS.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# #[sqlx::test] makes a fresh database per test on this server.
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# Tests make their own streams (TEST_<uuid>, subjects test.<uuid>.>) on this server and delete them.
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
cargo build --workspace --bins
# The compose file and every Kubernetes overlay, validated offline (and their env vars checked
# against what the binaries read).
deploy/validate.py target/debug
cargo nextest run --workspace --no-fail-fast
# The scenarios again, pointed at running services by URL only (as against docker compose).
scripts/e2e-external.sh
cargo test --workspace --doc
