#!/usr/bin/env bash
# The README's run command: brings the whole stack up on this machine and shows it
# healthy. Installs and starts the services, builds release binaries, migrates, starts
# the API, a worker and beat in the background (logs and PIDs in .run/), waits until
# the API is ready, and prints where everything is. Stop with scripts/down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
RUN_DIR=${DG_RUN_DIR:-$PWD/.run}
API_PORT=${DG_API_PORT:-8000}

step() { printf '\n== %s\n' "$*"; }

step "services"
scripts/services.sh start

step "building release binaries"
cargo build --release --locked --bins
BIN=$CARGO_TARGET_DIR/release

mkdir -p "$RUN_DIR"
if [ -f "$RUN_DIR/api.pid" ] && kill -0 "$(cat "$RUN_DIR/api.pid")" 2>/dev/null; then
  echo "the stack is already running (scripts/down.sh stops it)"; exit 1
fi

# Keys made once per checkout and kept in .run (never committed): the keyed hash of
# secrets and the scan report encryption key.
if [ ! -f "$RUN_DIR/keys" ]; then
  umask 077
  printf 'export SECRET_HASH_KEY=%s\nexport REPORT_KEYS=k1:%s\n' \
    "$(openssl rand -base64 48 | tr -d '\n')" "$(openssl rand -base64 32)" >"$RUN_DIR/keys"
fi

# The demo's git server and credential service (scripts/demo.sh uses them).
rm -f "$RUN_DIR/demo-services"
nohup "$BIN/deployguard-demo-services" "$RUN_DIR/demo-services" >>"$RUN_DIR/demo-services.log" 2>&1 &
echo $! >"$RUN_DIR/demo-services.pid"
for _ in $(seq 1 50); do [ -s "$RUN_DIR/demo-services" ] && break; sleep 0.1; done
# shellcheck disable=SC1091
. "$RUN_DIR/demo-services"

cat >"$RUN_DIR/env" <<ENV
export DATABASE_URL=postgresql://${DG_PG_USER:-deployguard}:${DG_PG_PASSWORD:-deployguard}@127.0.0.1:5432/${DG_PG_DB:-deployguard}
export AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
export S3_ENDPOINT_URL=http://127.0.0.1:${DG_S3_PORT:-9000}
export S3_ACCESS_KEY=${DG_S3_ACCESS_KEY:-deployguard-dev}
export S3_SECRET_KEY=${DG_S3_SECRET_KEY:-deployguard-dev-secret}
export S3_BUCKET=deployguard
export S3_CREATE_BUCKET=true
export API_ADDR=127.0.0.1:$API_PORT
export LOG_LEVEL=\${LOG_LEVEL:-info}
export LOG_FORMAT=\${LOG_FORMAT:-json}
export AUTH_SERVICE_URL=$DEMO_AUTH_SERVICE_URL
# The demo git server runs on this machine, over plain http.
export URL_ALLOWLIST=127.0.0.0/8
export ALLOW_HTTP_URLS=true
export WORK_DIR=$RUN_DIR/work
. "$RUN_DIR/keys"
ENV
# shellcheck disable=SC1091
. "$RUN_DIR/env"

step "migrating"
"$BIN/deployguard-api" migrate

step "starting api, worker and beat (logs in $RUN_DIR)"
start() { # name command...
  local name=$1; shift
  nohup "$@" >>"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
}
start api "$BIN/deployguard-api" serve
start worker "$BIN/deployguard-worker"
start beat "$BIN/deployguard-beat"

ready_url="http://127.0.0.1:$API_PORT/api/v2/health/ready"
for _ in $(seq 1 120); do
  if curl -fsS "$ready_url" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$RUN_DIR/api.pid")" 2>/dev/null; then
    echo "the API exited; last lines of $RUN_DIR/api.log:"; tail -n 20 "$RUN_DIR/api.log"; exit 1
  fi
  sleep 0.5
done
for name in worker beat; do
  kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null || { echo "$name exited:"; tail -n 20 "$RUN_DIR/$name.log"; exit 1; }
done

step "a real job, end to end (scripts/demo.sh)"
scripts/demo.sh

step "ready"
curl -sS "$ready_url"; echo
cat <<TXT

  API             http://127.0.0.1:$API_PORT/api/v2   (health: /api/v2/health, /api/v2/health/ready)
  API docs        http://127.0.0.1:$API_PORT/docs     (OpenAPI: /api/v2/openapi.json)
  RabbitMQ UI     http://127.0.0.1:15672              (guest / guest)
  S3 (s3s-fs)     http://127.0.0.1:${DG_S3_PORT:-9000}  bucket "deployguard"
  Logs, PIDs      $RUN_DIR/{api,worker,beat}.log
  Environment     . $RUN_DIR/env     (to run the binaries by hand)
  Stop            scripts/down.sh
TXT
