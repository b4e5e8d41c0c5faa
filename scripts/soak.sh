#!/usr/bin/env bash
# A soak: both release binaries on fresh databases under a steady gRPC load for a long time,
# sampling their resident memory, to see that it stays flat (README "Benchmarks").
#
#   scripts/soak.sh                      # 10 minutes, 16 clients, a sample every 30 s
#   SOAK_DURATION=30m SOAK_CLIENTS=32 SOAK_SAMPLE_SECS=60 scripts/soak.sh
#
# Prints the loadgen report, then one line per sample: seconds, command-svc RSS, query-svc RSS
# (KiB). The samples are also in target/soak/rss.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${SOAK_DURATION:-10m}"
clients="${SOAK_CLIENTS:-16}"
every="${SOAK_SAMPLE_SECS:-30}"

scripts/setup.sh
cargo build --release --workspace --bins

run_id="soak_$(date +%s)_$$"
# shellcheck source=lib/local-stack.sh
source scripts/lib/local-stack.sh
out="target/soak"
mkdir -p "$out"

export LOG_FORMAT=json RUST_LOG=warn NATS_URL NATS_STREAM="$stream" NATS_SUBJECT_PREFIX="soak.${run_id}"
export AUTH_DISABLED=true METRICS_ADDR=off
GRPC_ADDR="$command_addr" DATABASE_URL="$PG/$write_db?sslmode=disable" \
  target/release/command-svc > "$out/command-svc.log" 2>&1 &
command_pid=$!
pids+=("$command_pid")
GRPC_ADDR="$query_addr" DATABASE_URL="$PG/$read_db?sslmode=disable" COMMAND_SVC_URL="http://$command_addr" \
  target/release/query-svc > "$out/query-svc.log" 2>&1 &
query_pid=$!
pids+=("$query_pid")
wait_serving target/release

rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
start=$(date +%s)
printf 'seconds\tcommand_svc_kib\tquery_svc_kib\n' > "$out/rss.tsv"
(
  while kill -0 "$command_pid" 2>/dev/null && kill -0 "$query_pid" 2>/dev/null; do
    printf '%s\t%s\t%s\n' "$(( $(date +%s) - start ))" "$(rss "$command_pid")" "$(rss "$query_pid")" >> "$out/rss.tsv"
    sleep "$every"
  done
) &
sampler=$!

target/release/loadgen run --command-url "http://$command_addr" --query-url "http://$query_addr" \
  --clients "$clients" --mix mixed --duration "$duration" --warmup 5s
printf '%s\t%s\t%s\n' "$(( $(date +%s) - start ))" "$(rss "$command_pid")" "$(rss "$query_pid")" >> "$out/rss.tsv"
kill "$sampler" 2>/dev/null || true
column -t "$out/rss.tsv"
