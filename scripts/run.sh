#!/usr/bin/env bash
# Runs the whole stack on this machine: checks/starts Postgres and NATS, builds, starts both
# services in the foreground of this script, prints where they listen. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --bins

export LOG_FORMAT="${LOG_FORMAT:-pretty}"
COMMAND_ADDR="${COMMAND_ADDR:-127.0.0.1:50051}"
QUERY_ADDR="${QUERY_ADDR:-127.0.0.1:50052}"

GRPC_ADDR="$COMMAND_ADDR" target/release/command-svc &
command_pid=$!
GRPC_ADDR="$QUERY_ADDR" target/release/query-svc &
query_pid=$!
trap 'kill -TERM $command_pid $query_pid 2>/dev/null; wait' INT TERM EXIT

sleep 1
cat <<MSG

command-svc listens on $COMMAND_ADDR, query-svc on $QUERY_ADDR. Try:
  grpcurl -plaintext $COMMAND_ADDR list
  grpcurl -plaintext $COMMAND_ADDR grpc.health.v1.Health/Check
Ctrl-C stops both.
MSG
wait
