#!/usr/bin/env bash
# The project's test command: prepares the machine, builds the service binaries the end-to-end
# tests start, then runs every test against the real Postgres and NATS.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast
cargo test --workspace --doc
