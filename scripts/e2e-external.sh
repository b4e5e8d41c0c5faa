#!/usr/bin/env bash
# Runs the end-to-end scenarios against services this script starts as plain processes, reached
# only through E2E_COMMAND_SVC_URL / E2E_QUERY_SVC_URL: the same path as a docker compose stack
# or a cluster, where the suite is pointed at endpoints and starts nothing itself.
#   scripts/e2e-external.sh            # local processes (CI does this)
#   E2E_COMMAND_SVC_URL=http://localhost:50051 E2E_QUERY_SVC_URL=http://localhost:50052 \
#     cargo nextest run -p e2e --test scenarios       # any running stack, e.g. docker compose
set -euo pipefail
cd "$(dirname "$0")/.."

run_id="e2e_ext_$(date +%s)_$$"
# shellcheck source=lib/local-stack.sh
source scripts/lib/local-stack.sh
prefix="e2e.${run_id}"

# The services log to files, at a level that shows each relay and projector batch; a failed run
# prints their ends and what the database is waiting on, so a stall can be told apart from a
# failure.
logs="target/e2e-external"
mkdir -p "$logs"
export LOG_FORMAT=pretty NATS_URL NATS_STREAM="$stream" NATS_SUBJECT_PREFIX="$prefix"
export AUTH_DISABLED=true
RUST_LOG=info,command_svc::relay=debug GRPC_ADDR="$command_addr" DATABASE_URL="$PG/$write_db" \
  RELAY_POLL_INTERVAL=50ms target/debug/command-svc > "$logs/command-svc.log" 2>&1 &
pids+=($!)
RUST_LOG=info,query_svc::projector=debug GRPC_ADDR="$query_addr" DATABASE_URL="$PG/$read_db" \
  COMMAND_SVC_URL="http://$command_addr" target/debug/query-svc > "$logs/query-svc.log" 2>&1 &
pids+=($!)
wait_serving target/debug

status=0
E2E_COMMAND_SVC_URL="http://$command_addr" E2E_QUERY_SVC_URL="http://$query_addr" \
  cargo nextest run -p e2e --test scenarios --no-fail-fast || status=$?
if [ "$status" != 0 ]; then
  for service in command-svc query-svc; do
    echo "--- last lines of $service's log ($logs/$service.log)" >&2
    tail -n 60 "$logs/$service.log" >&2
  done
  echo "--- transactions open on the server now" >&2
  psql "$PG/postgres" -c "SELECT pid, datname, state, now() - xact_start AS open_for, backend_xid,
      wait_event_type, wait_event, left(query, 60) AS query
    FROM pg_stat_activity WHERE xact_start IS NOT NULL ORDER BY xact_start" >&2 || true
fi
exit "$status"
