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

PG="postgres://postgres@127.0.0.1:5432"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
run_id="soak_$(date +%s)_$$"
write_db="${run_id}_write"
read_db="${run_id}_read"
stream="$(echo "${run_id}" | tr '[:lower:]' '[:upper:]')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
command_addr="127.0.0.1:$(free_port)"
query_addr="127.0.0.1:$(free_port)"
out="target/soak"
mkdir -p "$out"

for db in "$write_db" "$read_db"; do psql "$PG/postgres" -qc "CREATE DATABASE $db"; done
pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  for db in "$write_db" "$read_db"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
  python3 - "$NATS_URL" "$stream" <<'PY' || true
import socket, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
with socket.create_connection((url.hostname, url.port or 4222), timeout=5) as s:
    s.recv(4096)
    s.sendall(f"CONNECT {{}}\r\nPUB $JS.API.STREAM.DELETE.{sys.argv[2]} 0\r\n\r\nPING\r\n".encode())
    s.recv(4096)
PY
}
trap cleanup EXIT

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
for binary_addr in "command-svc $command_addr" "query-svc $query_addr"; do
  set -- $binary_addr
  for _ in $(seq 1 150); do
    GRPC_ADDR="$2" "target/release/$1" --probe && break
    sleep 0.2
  done
  GRPC_ADDR="$2" "target/release/$1" --probe || { echo "$1 did not become SERVING" >&2; exit 1; }
done

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
