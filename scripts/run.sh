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

# Two databases on the local server: the event store (write side) and the read model.
WRITE_DB="${WRITE_DB:-pizzeria}"
READ_DB="${READ_DB:-pizzeria_read}"
for db in "$WRITE_DB" "$READ_DB"; do
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" >/dev/null
done

# Local use: no tokens (tenant from x-tenant-id). README, Authentication, shows the other way.
export AUTH_DISABLED="${AUTH_DISABLED:-true}"

GRPC_ADDR="$COMMAND_ADDR" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$WRITE_DB" \
  target/release/command-svc &
command_pid=$!
GRPC_ADDR="$QUERY_ADDR" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$READ_DB" \
  COMMAND_SVC_URL="http://$COMMAND_ADDR" target/release/query-svc &
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
