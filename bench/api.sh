#!/usr/bin/env bash
# REST API benchmark: job creation (insert + confirmed publish) and job reads under load
# from wrk on the same machine.
#
#   bench/api.sh
#
# Starts a release deployguard-api on a fresh PostgreSQL database, a fresh RabbitMQ
# vhost and its own bucket (all removed afterwards), then runs, each for DURATION
# seconds after a short warm-up:
#   create: POST /api/v2/jobs (a new job per request: one insert statement that also
#           stages the task in the outbox, a publish awaited until the broker confirms
#           it, one statement marking it published and writing the audit row);
#   read:   GET /api/v2/jobs/{id} of a job with 20 secrets (the job and its secrets in
#           one statement).
# Every request carries X-User-ID (gateway mode). wrk prints requests/s and the latency
# percentiles; non-2xx answers are reported and make the run fail.
#
# Environment: DURATION (default 20), READ_CONNECTIONS (default 32), CREATE_CONNECTIONS
# (default 16), THREADS (default 2), PORT (default 8099), DB_CONNECTIONS
# (DATABASE_MAX_CONNECTIONS, default 8: more backends than cores only contend),
# CARGO_TARGET_DIR (default ~/.cache/deployguard/target-bench), PGHOST/PGPORT/PGUSER
# (127.0.0.1, 5432, postgres), RABBITMQ_API (http://127.0.0.1:15672/api), S3 settings as
# scripts/services.sh starts them.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
READ_CONNECTIONS=${READ_CONNECTIONS:-32}
CREATE_CONNECTIONS=${CREATE_CONNECTIONS:-16}
THREADS=${THREADS:-2}
PORT=${PORT:-8099}
DB_CONNECTIONS=${DB_CONNECTIONS:-8}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target-bench}
PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER
RABBITMQ_API=${RABBITMQ_API:-http://127.0.0.1:15672/api}
RUN_ID=bench_api_$$
WORK=$(mktemp -d)

command -v wrk >/dev/null || {
  echo "installing wrk"; sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get install -y -qq wrk >/dev/null
}
scripts/services.sh start >/dev/null
cargo build --release --locked --quiet --bin deployguard-api
API_BIN=$CARGO_TARGET_DIR/release/deployguard-api

cleanup() {
  [ -n "${API_PID:-}" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
  psql -q -c "DROP DATABASE IF EXISTS $RUN_ID WITH (FORCE)" >/dev/null 2>&1 || true
  curl -s -u guest:guest -X DELETE "$RABBITMQ_API/vhosts/$RUN_ID" >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql -q -c "CREATE DATABASE $RUN_ID" >/dev/null
curl -sf -u guest:guest -X PUT -H 'content-type: application/json' -d '{}' \
  "$RABBITMQ_API/vhosts/$RUN_ID" >/dev/null
curl -sf -u guest:guest -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "$RABBITMQ_API/permissions/$RUN_ID/guest" >/dev/null

# PostgreSQL is on this machine: no TLS on loopback (Debian's server offers it, and
# sqlx takes it when offered).
export DATABASE_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/$RUN_ID?sslmode=disable"
export DATABASE_MAX_CONNECTIONS=$DB_CONNECTIONS
export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$RUN_ID"
export S3_ENDPOINT_URL=${S3_ENDPOINT_URL:-http://127.0.0.1:9000}
export S3_ACCESS_KEY=${S3_ACCESS_KEY:-deployguard-dev}
export S3_SECRET_KEY=${S3_SECRET_KEY:-deployguard-dev-secret}
export S3_BUCKET=${RUN_ID//_/-} S3_CREATE_BUCKET=true
export API_ADDR=127.0.0.1:$PORT URL_ALLOWLIST=127.0.0.0/8 ALLOW_HTTP_URLS=true LOG_LEVEL=warn
"$API_BIN" serve >"$WORK/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 1 100); do
  curl -fs "http://$API_ADDR/api/v2/health/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://$API_ADDR/api/v2/health/ready" >/dev/null || { cat "$WORK/api.log"; exit 1; }

cat >"$WORK/create.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"source_url": "http://127.0.0.1:9/org/repo.git", "source_branch": "main"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-User-ID"] = "bench-user"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("non_2xx=%d socket_errors=%d\n", e.status, e.connect + e.read + e.write + e.timeout))
end
LUA

JOB=$(curl -fsS -X POST -H 'content-type: application/json' -H 'X-User-ID: bench-user' \
  -d '{"source_url": "http://127.0.0.1:9/org/repo.git"}' "http://$API_ADDR/api/v2/jobs" \
  | sed -E 's/.*"id":"([^"]+)".*/\1/')
psql -q "$RUN_ID" <<SQL
INSERT INTO secrets_found (id, job_id, rule_id, secret_type, value_preview, value_hash,
                           hash_key_id, locations, confidence)
SELECT gen_random_uuid(), '$JOB', 'rule-' || i, 'generic', 'abc…xyz',
       sha256(('s' || i)::bytea), 'k1',
       jsonb_build_array(jsonb_build_object('path', 'config/' || i || '.yml', 'commit', 'abc', 'line', i)),
       'high'
FROM generate_series(1, 20) AS i;
UPDATE jobs SET status = 'awaiting_selection', total_secrets_found = 20 WHERE id = '$JOB';
SQL
cat >"$WORK/read.lua" <<LUA
wrk.headers["X-User-ID"] = "bench-user"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("non_2xx=%d socket_errors=%d\n", e.status, e.connect + e.read + e.write + e.timeout))
end
LUA

run() { # name url script
  local name=$1 url=$2 script=$3
  wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$script" "$url" >/dev/null  # warm-up
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$script" "$url" >"$WORK/$name.txt"
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$name.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.txt")
  bad=$(awk -F'[= ]' '/^non_2xx=/ {print $2 + $4}' "$WORK/$name.txt")
  printf '%-7s %3s conns %10s req/s   p50 %8s   p99 %8s   errors %s\n' "$name" "$CONNECTIONS" "$rps" "$p50" "$p99" "$bad"
  if [ "$bad" != "0" ]; then cat "$WORK/$name.txt"; tail -20 "$WORK/api.log"; exit 1; fi
}

echo "wrk -t$THREADS -d${DURATION}s; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
# Reads first: the creation run leaves the broker busy writing its queue to disk.
CONNECTIONS=$READ_CONNECTIONS run read "http://$API_ADDR/api/v2/jobs/$JOB" "$WORK/read.lua"
CONNECTIONS=$CREATE_CONNECTIONS run create "http://$API_ADDR/api/v2/jobs" "$WORK/create.lua"
jobs=$(psql -tA "$RUN_ID" -c "SELECT count(*) FROM jobs")
unpublished=$(psql -tA "$RUN_ID" -c "SELECT count(*) FROM outbox WHERE published_at IS NULL")
# rabbitmqctl counts exactly; the management API samples.
queued=$(rabbitmqctl -q list_queues -p "$RUN_ID" name messages | awk '$1 == "deployguard.scan" {print $2}')
echo "jobs in the database: $jobs; scan tasks queued: $queued; staged but unpublished: $unpublished"
