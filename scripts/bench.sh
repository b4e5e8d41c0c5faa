#!/usr/bin/env bash
# The whole performance comparison in one command (README "Benchmarks"): release binaries,
# then loadgen compare — this project over gRPC with the relay and query-svc running,
# cqrs-es + postgres-es in process and pgbench doing the raw SQL, side by side on the same
# Postgres — then the criterion benches. Takes ~15 minutes; run it on a quiet machine (a
# concurrent build makes every durable commit many times slower) and compare only figures
# from one run.
#
#   scripts/bench.sh                     everything
#   scripts/bench.sh --clients 1,8,32 --duration 20s     loadgen compare options
#   BENCH_CRITERION=0 scripts/bench.sh   skip the criterion benches
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# Loopback needs no TLS, and cqrs-es's sqlx is built without it: every side connects in clear
# text, so all three pay the same per-round-trip cost.
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
cargo build --release --workspace --bins
target/release/loadgen compare --json target/bench/compare.json "$@"
if [ "${BENCH_CRITERION:-1}" != 0 ]; then
  cargo bench -p command-svc --bench aggregate --bench load
  cargo bench -p query-svc --bench projection
fi
