#!/usr/bin/env bash
# Task-runtime benchmark: DeployGuard's worker against Celery 5 on the same RabbitMQ in
# the same run, with a bare lapin publisher and consumer for reference.
#
#   bench/tasks.sh
#
# COUNT no-op tasks (default 20 000), persistent, publisher-confirmed, acknowledged late,
# prefetch 1 per slot, 2 slots, measured in two cases:
#   (a) no result backend: ours runs deployguard.diagnostic.noop_unrecorded, Celery a task
#       with ignore_result=True and no backend configured;
#   (b) bookkeeping in PostgreSQL: ours runs deployguard.diagnostic.noop (claim and outcome
#       in task_results before the ack), Celery a task with ignore_result=False and its
#       db+postgresql result backend (one celery_taskmeta row per task before the ack).
# For each: publish all COUNT messages first (rate = COUNT / time of the publishing
# loop, the connection opened beforehand), then start the consumer and measure the
# drain with `taskbench drain-watch`, the same for every consumer: it polls the queue's
# ready count (passive queue.declare every 5 ms) and reports the messages delivered
# between the first poll below the initial count and the first poll at zero, divided
# by that time, so consumer start-up (our migrations, Celery's pool) is left out. Then
# the queue must have no unacknowledged message left (rabbitmqctl) and, in case (b),
# COUNT success rows must be in the database.
#
# Ours: `taskbench publish` (Publisher::publish_many, batches of 1000) and
# `deployguard-worker --queues default --concurrency 2`. Celery: bench/celery_app.py
# (apply_async in a loop with confirm_publish; `celery worker -P prefork -c 2
# --prefetch-multiplier 1`, acks_late; gossip, mingle and heartbeats off). Bare lapin:
# `taskbench bare-publish` / `bare-consume` with our message bytes, the same batching
# and the same prefetch, once on a queue declared with our work queues' arguments
# (x-max-priority, dead-letter exchange: the reference for "80% of bare lapin"), once
# on a plain durable queue like Celery's, and once on our queue arguments running the
# worker's own claim and finish statements (records::claim, records::finish) against a
# fresh database before each ack: the floor of case (b)'s design without the runtime.
#
# Every measurement gets a fresh RabbitMQ vhost and a fresh PostgreSQL database, removed
# afterwards. Celery 5, SQLAlchemy and psycopg2 come from PyPI into a venv under BENCH_DIR.
#
# Environment: COUNT (default 20000), RUNS (default 1; the table shows medians),
# BENCH_DIR (default ~/.cache/deployguard/bench), AMQP_HOST (127.0.0.1:5672),
# RABBITMQ_API (http://127.0.0.1:15672/api), RABBITMQ_USER / RABBITMQ_PASS (guest),
# PGHOST / PGPORT / PGUSER (127.0.0.1, 5432, postgres: a role that may create databases,
# trusted or with PGPASSWORD), KEEP=1 (keep vhosts, databases and logs).
#
# Exit status: 0 when every measurement completed and checked out; 1 when a consumer lost
# or left messages or bookkeeping rows are missing; 2 on a setup or tool failure.
# Functions called indirectly (trap) look unreachable to shellcheck.
# shellcheck disable=SC2317
set -euo pipefail
{ # Parsed whole before it runs, so that editing this file cannot disturb a running benchmark.
cd "$(dirname "$0")/.."
ROOT=$(pwd)

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/deployguard/bench}
COUNT=${COUNT:-20000}
RUNS=${RUNS:-1}
KEEP=${KEEP:-0}
AMQP_HOST=${AMQP_HOST:-127.0.0.1:5672}
RABBITMQ_API=${RABBITMQ_API:-http://127.0.0.1:15672/api}
RABBITMQ_USER=${RABBITMQ_USER:-guest}
RABBITMQ_PASS=${RABBITMQ_PASS:-guest}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
VENV="$BENCH_DIR/celery-venv"
mkdir -p "$BENCH_DIR"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# --- clean-up of everything this script starts or creates -----------------------------
PIDS=() VHOSTS=() DATABASES=()
WORK=$(mktemp -d "$BENCH_DIR/tasks.XXXXXX")
# stop PID: SIGTERM to the process group the script started it in, SIGKILL after 20 s.
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }
stop() {
  local pid=$1
  if alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  fi
  for _ in $(seq 200); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "process $pid did not stop on SIGTERM; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid v d
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  if [ "$KEEP" = 1 ]; then
    log "kept: $WORK, vhosts ${VHOSTS[*]:-none}, databases ${DATABASES[*]:-none}"
    return
  fi
  for v in "${VHOSTS[@]}"; do drop_vhost "$v"; done
  for d in "${DATABASES[@]}"; do dropdb --if-exists "$d" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# background LOG CMD...: starts CMD in a process group of its own; sets BG_PID.
BG_PID=""
background() {
  local out=$1
  shift
  setsid "$@" >"$out" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
}
# finish PID: stops it and forgets it (so that a reused pid is never signalled later).
finish() {
  local pid=$1 kept=() p
  stop "$pid"
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

api() { # METHOD PATH [JSON]
  curl -sfS -u "$RABBITMQ_USER:$RABBITMQ_PASS" -X "$1" -H 'content-type: application/json' \
    ${3:+-d "$3"} "$RABBITMQ_API$2"
}
new_vhost() {
  api PUT "/vhosts/$1" >/dev/null || die "cannot create vhost $1 through $RABBITMQ_API"
  VHOSTS+=("$1")
  api PUT "/permissions/$1/$RABBITMQ_USER" '{"configure":".*","write":".*","read":".*"}' >/dev/null
}
drop_vhost() { [ "$KEEP" = 1 ] || api DELETE "/vhosts/$1" >/dev/null 2>&1 || true; }
new_db() {
  dropdb --if-exists "$1" 2>/dev/null || true
  createdb "$1" || die "cannot create database $1 (PGHOST=$PGHOST PGUSER=$PGUSER)"
  DATABASES+=("$1")
}
drop_db() { [ "$KEEP" = 1 ] || dropdb --if-exists "$1" 2>/dev/null || true; }
amqp_url() { echo "amqp://$RABBITMQ_USER:$RABBITMQ_PASS@$AMQP_HOST/$1"; }
db_url() { echo "postgres://$PGUSER@$PGHOST:$PGPORT/$1"; }
field() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]])' "$1" "$2"; }

# --- tools ---------------------------------------------------------------------------
command -v rabbitmqctl >/dev/null || die "rabbitmqctl is needed (to read unacknowledged counts)"
command -v createdb >/dev/null || die "createdb/dropdb/psql are needed"
api GET /overview >/dev/null || die "the RabbitMQ management API does not answer at $RABBITMQ_API"
psql -d postgres -tAc 'select 1' >/dev/null || die "PostgreSQL does not answer at $PGHOST:$PGPORT as $PGUSER"

log "building the worker and taskbench (release)"
cargo build --release -p deployguard-worker --bin deployguard-worker --example taskbench >&2
WORKER="$CARGO_TARGET_DIR/release/deployguard-worker"
TB="$CARGO_TARGET_DIR/release/examples/taskbench"

if ! "$VENV/bin/python" -c 'import celery, sqlalchemy, psycopg2' 2>/dev/null; then
  log "installing Celery 5, SQLAlchemy and psycopg2-binary from PyPI into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip >&2
  "$VENV/bin/pip" install --quiet 'celery==5.*' sqlalchemy psycopg2-binary >&2
fi
versions=$("$VENV/bin/python" -c 'import sys, celery, kombu, amqp, sqlalchemy, psycopg2
print(f"Celery {celery.__version__} (kombu {kombu.__version__}, py-amqp {amqp.__version__}, SQLAlchemy {sqlalchemy.__version__}, psycopg2 {psycopg2.__version__.split()[0]}), Python {sys.version.split()[0]}")')

# --- measuring -----------------------------------------------------------------------
RESULTS="$WORK/results.txt" # run system case metric value
: >"$RESULTS"
status=0
record() { echo "$*" >>"$RESULTS"; }
problem() { log "PROBLEM: $*"; echo "$*" >>"$WORK/problems.txt"; status=1; }

# unacked VHOST QUEUE: "ready unacked" from rabbitmqctl (real time, unlike the API).
queue_counts() {
  rabbitmqctl list_queues -q --no-table-headers -p "$1" name messages_ready messages_unacknowledged 2>/dev/null |
    awk -v q="$2" '$1==q{print $2, $3}'
}
# settle VHOST QUEUE LABEL: waits up to 30 s for no ready and no unacknowledged message.
settle() {
  local counts=""
  for _ in $(seq 30); do
    counts=$(queue_counts "$1" "$2")
    [ "$counts" = "0 0" ] && return 0
    sleep 1
  done
  problem "$3: queue $2 still holds ready/unacknowledged messages after the drain: ${counts:-unknown}"
  return 1
}

# drain LABEL VHOST QUEUE LOG CMD...: watches QUEUE drain while CMD consumes it.
# Sets DRAIN_RATE (empty on failure). Not to be called in a subshell: it starts processes.
DRAIN_RATE=""
drain() {
  local label=$1 vhost=$2 queue=$3 consumer_log=$4 ready="$WORK/$1.watching" watch_pid consumer_pid rc=0
  shift 4
  DRAIN_RATE=""
  rm -f "$ready"
  background "$WORK/$label.drain.json" "$TB" drain-watch --amqp "$(amqp_url "$vhost")" \
    --queue "$queue" --count "$COUNT" --ready-file "$ready"
  watch_pid=$BG_PID
  for _ in $(seq 300); do
    [ -e "$ready" ] && break
    kill -0 "$watch_pid" 2>/dev/null || break
    sleep 0.02
  done
  [ -e "$ready" ] || { cat "$WORK/$label.drain.json" >&2; die "$label: drain-watch did not start"; }
  log "$label: starting the consumer"
  background "$consumer_log" "$@"
  consumer_pid=$BG_PID
  wait "$watch_pid" || rc=$?
  finish "$watch_pid"
  if [ "$rc" != 0 ]; then
    problem "$label: drain-watch failed: $(tail -n 3 "$WORK/$label.drain.json" | tr '\n' ' ')"
    log "$label: consumer log (last 30 lines):"
    tail -n 30 "$consumer_log" >&2
    finish "$consumer_pid"
    return 0
  fi
  settle "$vhost" "$queue" "$label" || true
  finish "$consumer_pid"
  log "$label: $(tail -n 1 "$WORK/$label.drain.json")"
  DRAIN_RATE=$(field "$WORK/$label.drain.json" per_second)
}

run_ours() { # RUN CASE TASK
  local run=$1 case=$2 task=$3 label="r$1-ours-$2" vhost db pub rate rows lines
  vhost="dgbench-$label" db="dgbench_r${run}_ours_$case"
  new_vhost "$vhost"
  new_db "$db"
  log "$label: publishing $COUNT × $task"
  "$TB" publish --amqp "$(amqp_url "$vhost")" --count "$COUNT" --task "$task" \
    >"$WORK/$label.publish.json" || die "$label: publish failed: $(cat "$WORK/$label.publish.json")"
  pub=$(field "$WORK/$label.publish.json" per_second)
  log "$label: $(cat "$WORK/$label.publish.json")"
  drain "$label" "$vhost" deployguard "$WORK/$label.worker.log" \
    env DATABASE_URL="$(db_url "$db")" AMQP_URL="$(amqp_url "$vhost")" \
    S3_ENDPOINT_URL=http://127.0.0.1:9000 S3_ACCESS_KEY=deployguard-dev \
    S3_SECRET_KEY=deployguard-dev-secret S3_BUCKET=dg-bench WORKER_DIAGNOSTIC_TASKS=true \
    WORKER_METRICS_ADDR=127.0.0.1:0 LOG_LEVEL=warn \
    SECRET_HASH_KEY=bench-only-secret-hash-key-0123456789 \
    REPORT_KEYS=bench:YmVuY2gtb25seSByZXBvcnQga2V5LCAzMiBieXRlcyE= \
    "$WORKER" --queues default --concurrency 2
  rate=$DRAIN_RATE
  lines=$(grep -c . "$WORK/$label.worker.log" || true)
  if [ "$lines" -gt 0 ]; then
    log "$label: the worker logged $lines line(s) at warn or above; first 10:"
    head -n 10 "$WORK/$label.worker.log" >&2
  fi
  if [ "$case" = b ]; then
    rows=$(psql -d "$db" -tAc "select count(*) from task_results where state = 'success'")
    [ "$rows" = "$COUNT" ] || problem "$label: $rows success rows in task_results, expected $COUNT"
  fi
  record "$run ours $case publish $pub"
  record "$run ours $case drain ${rate:-failed}"
  drop_vhost "$vhost"
  drop_db "$db"
}

run_celery() { # RUN CASE TASK
  local run=$1 case=$2 task=$3 label="r$1-celery-$2" vhost db="" backend="" pub rate rows
  vhost="dgbench-$label"
  new_vhost "$vhost"
  if [ "$case" = b ]; then
    db="dgbench_r${run}_celery_$case"
    new_db "$db"
    # psycopg2 named explicitly: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3.
    backend="db+postgresql+psycopg2://$PGUSER@$PGHOST:$PGPORT/$db"
  fi
  log "$label: publishing $COUNT × $task"
  (cd "$ROOT/bench" && BENCH_BROKER_URL="$(amqp_url "$vhost")" BENCH_RESULT_BACKEND="$backend" \
    "$VENV/bin/python" celery_app.py publish --count "$COUNT" --task "$task") \
    >"$WORK/$label.publish.json" || die "$label: publish failed: $(cat "$WORK/$label.publish.json")"
  pub=$(field "$WORK/$label.publish.json" per_second)
  log "$label: $(cat "$WORK/$label.publish.json")"
  drain "$label" "$vhost" celery "$WORK/$label.worker.log" \
    env -C "$ROOT/bench" BENCH_BROKER_URL="$(amqp_url "$vhost")" BENCH_RESULT_BACKEND="$backend" \
    "$VENV/bin/celery" -A celery_app worker -P prefork -c 2 --prefetch-multiplier 1 \
    -Q celery -n "bench-$label@%h" -l WARNING --without-gossip --without-mingle --without-heartbeat
  rate=$DRAIN_RATE
  if [ "$case" = b ]; then
    rows=$(psql -d "$db" -tAc "select count(*) from celery_taskmeta where status = 'SUCCESS'")
    [ "$rows" = "$COUNT" ] || problem "$label: $rows SUCCESS rows in celery_taskmeta, expected $COUNT"
    drop_db "$db"
  fi
  record "$run celery $case publish $pub"
  record "$run celery $case drain ${rate:-failed}"
  drop_vhost "$vhost"
}

run_bare() { # RUN KIND(priority|plain|record)
  local run=$1 kind=$2 label="r$1-bare-$2" vhost flag=() consume=() db="" pub rate rows
  vhost="dgbench-$label"
  [ "$kind" = plain ] && flag=(--plain)
  if [ "$kind" = record ]; then
    db="dgbench_r${run}_bare_record"
    new_db "$db"
    consume=(--record "$(db_url "$db")")
  fi
  new_vhost "$vhost"
  log "$label: publishing $COUNT bare messages"
  "$TB" bare-publish --amqp "$(amqp_url "$vhost")" --queue bench.bare --count "$COUNT" "${flag[@]}" \
    >"$WORK/$label.publish.json" || die "$label: bare publish failed"
  pub=$(field "$WORK/$label.publish.json" per_second)
  log "$label: $(cat "$WORK/$label.publish.json")"
  drain "$label" "$vhost" bench.bare "$WORK/$label.consume.json" \
    "$TB" bare-consume --amqp "$(amqp_url "$vhost")" --queue bench.bare --count "$COUNT" \
    --slots 2 "${flag[@]}" "${consume[@]}"
  rate=$DRAIN_RATE
  log "$label: bare-consume's own figure (first delivery to last ack): $(tail -n 1 "$WORK/$label.consume.json")"
  if [ -n "$db" ]; then
    rows=$(psql -d "$db" -tAc "select count(*) from task_results where state = 'success'")
    [ "$rows" = "$COUNT" ] || problem "$label: $rows success rows in task_results, expected $COUNT"
    drop_db "$db"
  fi
  record "$run bare-$kind - publish $pub"
  record "$run bare-$kind - drain ${rate:-failed}"
  drop_vhost "$vhost"
}

for run in $(seq "$RUNS"); do
  log "=== run $run of $RUNS, $COUNT tasks ==="
  run_ours "$run" a deployguard.diagnostic.noop_unrecorded
  run_celery "$run" a bench.noop
  run_ours "$run" b deployguard.diagnostic.noop
  run_celery "$run" b bench.noop_recorded
  run_bare "$run" priority
  run_bare "$run" plain
  run_bare "$run" record
done

# --- report --------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
os=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null || true)
rabbit=$(api GET /overview | python3 -c 'import json,sys; d=json.load(sys.stdin); print("RabbitMQ %s (Erlang %s)" % (d["rabbitmq_version"], d["erlang_version"]))')
pg=$(psql -d postgres -tAc 'show server_version' | cut -d' ' -f1)
table=$(python3 - "$RESULTS" "$COUNT" "$RUNS" <<'PY'
import statistics, sys
path, count, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vals = {}
for line in open(path):
    run, system, case, metric, value = line.split()
    if value != "failed":
        vals.setdefault((system, case, metric), []).append(float(value))
def med(system, case, metric):
    v = vals.get((system, case, metric))
    return statistics.median(v) if v else None
def cell(system, case, metric):
    v = vals.get((system, case, metric))
    if not v:
        return "failed"
    s = f"{statistics.median(v):,.0f}"
    if len(v) > 1:
        s += " (" + ", ".join(f"{x:,.0f}" for x in v) + ")"
    return s
rows = [
    ("DeployGuard worker", "ours", "a", "(a) no result backend"),
    ("Celery", "celery", "a", "(a) no result backend"),
    ("DeployGuard worker", "ours", "b", "(b) bookkeeping in PostgreSQL (`task_results`)"),
    ("Celery", "celery", "b", "(b) bookkeeping in PostgreSQL (db+postgresql backend)"),
    ("bare lapin, queue with our arguments (x-max-priority 2)", "bare-priority", "-", "reference"),
    ("bare lapin, plain durable queue (as Celery's)", "bare-plain", "-", "reference"),
    ("bare lapin + the worker's two `task_results` statements (`records::claim`, `records::finish`) before each ack, queue with our arguments", "bare-record", "-", "reference for (b)"),
]
label = "median of %d runs (each run)" % runs if runs > 1 else "1 run"
print(f"| system | case | publish msg/s, {label} | drain msg/s, {label} |")
print("|---|---|---:|---:|")
for name, system, case, what in rows:
    print(f"| {name} | {what} | {cell(system, case, 'publish')} | {cell(system, case, 'drain')} |")
print()
def ratio(a, b, target=None):
    if a is None or b is None or b == 0:
        return "n/a"
    r = a / b
    if target is None:
        return f"{r:.2f}×"
    ok = "met" if r >= target else f"MISSED (short by {(1 - r / target) * 100:.0f}%)"
    return f"**{r:.2f}×** (target ≥ {target:g}×: {ok})"
print("- (a) publish, ours / Celery: " + ratio(med("ours", "a", "publish"), med("celery", "a", "publish"), 10))
print("- (a) drain, ours / Celery: " + ratio(med("ours", "a", "drain"), med("celery", "a", "drain"), 3))
print("- (a) drain, ours / bare lapin on a queue with our arguments: " + ratio(med("ours", "a", "drain"), med("bare-priority", "-", "drain"), 0.8))
print("- (b) drain, ours / Celery with its database backend: " + ratio(med("ours", "b", "drain"), med("celery", "b", "drain"), 5))
print("- informative: (b) drain, ours / bare lapin with the same two statements: " + ratio(med("ours", "b", "drain"), med("bare-record", "-", "drain"))
      + "; that bare floor / Celery with its database backend: " + ratio(med("bare-record", "-", "drain"), med("celery", "b", "drain")))
print("- informative: (a) drain, ours / bare lapin on a plain queue: " + ratio(med("ours", "a", "drain"), med("bare-plain", "-", "drain"))
      + "; bare lapin, priority queue / plain queue: " + ratio(med("bare-priority", "-", "drain"), med("bare-plain", "-", "drain"))
      + "; bare lapin on a plain queue / Celery: " + ratio(med("bare-plain", "-", "drain"), med("celery", "a", "drain")))
print("- informative: publish, ours / bare lapin (same queue arguments): " + ratio(med("ours", "a", "publish"), med("bare-priority", "-", "publish"))
      + "; (b) publish, ours / Celery (publishing touches no database on either side): " + ratio(med("ours", "b", "publish"), med("celery", "b", "publish")))
PY
)
problems=""
[ -s "$WORK/problems.txt" ] && problems=$(sed 's/^/- PROBLEM: /' "$WORK/problems.txt")
cat <<REPORT
## $(date -u +%Y-%m-%d) — Task runtime: $COUNT no-op tasks against Celery
Machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $os; $rabbit; PostgreSQL $pg; $versions; $(rustc --version | cut -d' ' -f1-2).
Command: \`COUNT=$COUNT RUNS=$RUNS bench/tasks.sh\` (each measurement on a fresh vhost and database; messages persistent,
publisher-confirmed, acknowledged late, prefetch 1 per slot, 2 slots / \`-c 2 --prefetch-multiplier 1\`).

$table
${problems:+
$problems}
REPORT
exit "$status"
}
