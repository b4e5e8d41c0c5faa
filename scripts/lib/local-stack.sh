# Sourced by scripts that run both services as plain processes on fresh databases and a stream
# of their own (e2e-external.sh, soak.sh). Needs `run_id` set before it is sourced; defines
# PG, NATS_URL, the databases, the stream and two free addresses, creates the databases, and
# removes all of it (and stops every pid in `pids`) when the script exits.

PG="postgres://postgres@127.0.0.1:5432"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
write_db="${run_id}_write"
read_db="${run_id}_read"
stream="$(echo "${run_id}" | tr '[:lower:]' '[:upper:]')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
command_addr="127.0.0.1:$(free_port)"
query_addr="127.0.0.1:$(free_port)"

for db in "$write_db" "$read_db"; do psql "$PG/postgres" -qc "CREATE DATABASE $db"; done
pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  for db in "$write_db" "$read_db"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
  # The stream the relay made: deleted through the JetStream API (no nats CLI needed).
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

# Waits until both services (binaries in the directory $1) report SERVING, or fails.
wait_serving() {
  local binary_addr
  for binary_addr in "command-svc $command_addr" "query-svc $query_addr"; do
    set -- "$1" $binary_addr
    for _ in $(seq 1 150); do
      GRPC_ADDR="$3" "$1/$2" --probe && break
      sleep 0.2
    done
    GRPC_ADDR="$3" "$1/$2" --probe || { echo "$2 did not become SERVING" >&2; exit 1; }
    set -- "$1"
  done
}
