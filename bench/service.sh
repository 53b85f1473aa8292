#!/usr/bin/env bash
# A job on a large repository through the service, stage by stage, next to the CLI doing
# the same work on the same repository from the same git server.
#
#   scripts/up.sh        # the stack, with its demo git server and credential service
#   bench/service.sh     # then this
#
# The repository is bench/make_repo.py's (BENCH_COMMITS, BENCH_FILES, BENCH_FILE_KIB;
# defaults 5000, 1000, 32), repacked, or BENCH_REPO (any local repository, a real one
# brought with `git clone --mirror`, every ref of it), pushed to the demo git server. Every secret found
# is selected. Service: the three tasks' durations as the worker recorded them
# (task_results), with their own stage timings, plus the time from each request to its
# task's start (queueing). The person's pauses between steps are not counted. CLI:
# `git clone --mirror`, `deployguard scan --secrets-out`, `deployguard clean --all
# --archive`, `deployguard push`, each timed. Overhead = service / CLI - 1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${DG_RUN_DIR:-$PWD/.run}
# shellcheck disable=SC1091
. "$RUN_DIR/env"
# shellcheck disable=SC1091
. "$RUN_DIR/demo-services"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
DG=${DG:-$CARGO_TARGET_DIR/release/deployguard}
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/deployguard/bench}
COMMITS=${BENCH_COMMITS:-5000} FILES=${BENCH_FILES:-1000} KIB=${BENCH_FILE_KIB:-32}
REPO=${BENCH_REPO:-"$BENCH_DIR/service-$COMMITS-$FILES-$KIB.git"}
API="http://${API_ADDR}/api/v2"
NAME="bench-$(date +%s)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
authed() { echo "$1" | sed "s#://#://${DEMO_GIT_USER}:${DEMO_GIT_PASSWORD}@#"; }
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }
call() { curl -sS -X "$1" "$API$2" -H "X-User-ID: demo" -H 'Content-Type: application/json' ${3:+-d "$3"}; }
# One process polls (every 0.1 s) until the job reaches the status: a shell loop that
# started curl and python3 ten times a second would take CPU from the worker it times.
wait_for() {
  python3 - "$API/jobs/$1" "$2" <<'PY'
import json, sys, time, urllib.request
url, want = sys.argv[1], sys.argv[2]
request = urllib.request.Request(url, headers={"X-User-ID": "demo"})
for _ in range(36000):
    job = json.load(urllib.request.urlopen(request))["job"]
    if job["status"] == want:
        sys.exit(0)
    if job["status"] == "failed":
        sys.exit(f"job failed: {job.get('error_code')}: {job.get('error')}")
    time.sleep(0.1)
sys.exit("timed out")
PY
}

if [ -n "${BENCH_REPO:-}" ] && ! git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  echo "BENCH_REPO=$REPO is not a git repository" >&2
  exit 2
fi
if [ ! -d "$REPO" ]; then
  mkdir -p "$BENCH_DIR"
  python3 bench/make_repo.py "$REPO" --commits "$COMMITS" --files "$FILES" --file-kib "$KIB" >/dev/null
  git -C "$REPO" repack -a -d -f -q
fi
cargo build --release --locked -q -p deployguard-cli
# The demo server's two repositories (scripts/demo.sh's) take the benchmark's: made anew,
# since a mirror push may not delete the branch the demo's HEAD names.
rm -rf "$DEMO_GIT_ROOT/demo.git"
git init -q --bare "$DEMO_GIT_ROOT/demo.git"
git -C "$DEMO_GIT_ROOT/demo.git" config http.receivepack true
head=$(git -C "$REPO" symbolic-ref -q HEAD || true)
[ -z "$head" ] || git -C "$DEMO_GIT_ROOT/demo.git" symbolic-ref HEAD "$head"
git -C "$REPO" push -q --mirror "$(authed "$DEMO_GIT_BASE/demo.git")"
SRC="$DEMO_GIT_BASE/demo.git" DST="$DEMO_GIT_BASE/bench-target.git"
# Both sides push into an empty repository: a target that already holds the objects
# would make the second push cheaper.
empty_target() {
  rm -rf "$DEMO_GIT_ROOT/bench-target.git"
  git init -q --bare "$DEMO_GIT_ROOT/bench-target.git"
  git -C "$DEMO_GIT_ROOT/bench-target.git" config http.receivepack true
}
echo "repository: $(git -C "$REPO" rev-list --all --count) commits, $(du -sh "$REPO/objects/pack" | cut -f1) pack"

echo "-- CLI"
empty_target
t0=$(now); git clone -q --mirror "$(authed "$SRC")" "$work/cli.git"; t1=$(now)
"$DG" scan "$work/cli.git" --no-progress --format sarif -o "$work/cli.sarif" --secrets-out "$work/secrets.json" || true; t2=$(now)
"$DG" clean "$work/cli.git" --no-progress --secrets "$work/secrets.json" --all -o "$work/cli.bundle" --archive "$work/cli.zip" 2>/dev/null; t3=$(now)
DEPLOYGUARD_GIT_USERNAME=$DEMO_GIT_USER DEPLOYGUARD_GIT_TOKEN=$DEMO_GIT_PASSWORD \
  "$DG" push "$work/cli.bundle" --target-url "$DST" --force --allow-http >/dev/null; t4=$(now)
cli=$(python3 -c "import sys; a=[float(x) for x in sys.argv[1:]]; print(' '.join('%.2f' % (a[i+1]-a[i]) for i in range(4)), '%.2f' % (a[4]-a[0]))" "$t0" "$t1" "$t2" "$t3" "$t4")
echo "clone scan clean push total: $cli"

echo "-- service"
empty_target
job=$(call POST /jobs "{\"source_url\": \"$SRC\", \"source_credentials_id\": \"demo-git\"}" | field 'd["id"]')
wait_for "$job" awaiting_selection
ids=$(call GET "/jobs/$job" | field '",".join("\"%s\"" % s["id"] for s in d["secrets"])')
call POST "/jobs/$job/secrets/select" "{\"secret_ids\": [$ids]}" >/dev/null
call POST "/jobs/$job/clean" '{}' >/dev/null
wait_for "$job" cleaned
call POST "/jobs/$job/push" "{\"target_platform\": \"generic\", \"target_url\": \"$DST\", \"target_credentials_id\": \"demo-git\", \"force_push\": true}" >/dev/null
wait_for "$job" pushed
psql -qAt "$DATABASE_URL" -c "
  SELECT task_name, extract(epoch FROM finished_at - started_at), result::text
  FROM task_results WHERE job_id = '$job' AND state = 'success' ORDER BY started_at" >"$work/tasks"
psql -qAt "$DATABASE_URL" -c "
  SELECT coalesce(sum(extract(epoch FROM t.started_at - o.created_at)), 0)
  FROM task_results t JOIN outbox o ON o.message_id = t.task_id WHERE t.job_id = '$job'" >"$work/queued"
python3 - "$work/tasks" "$work/queued" "$cli" <<'PY'
import json, sys
rows = [l.split("|", 2) for l in open(sys.argv[1]).read().splitlines() if l]
queued = float(open(sys.argv[2]).read().strip() or 0)
clone, scan, clean, push, total = (float(x) for x in sys.argv[3].split())
service = sum(float(r[1]) for r in rows) + queued
print("task            seconds  stages (ms)")
for name, secs, result in rows:
    print(f"{name.split('.')[-1]:<16}{float(secs):7.2f}  {json.loads(result).get('timings')}")
print(f"queueing        {queued:7.2f}")
print(f"service total   {service:7.2f}")
print(f"CLI total       {total:7.2f}  (clone {clone}, scan {scan}, clean {clean}, push {push})")
print(f"overhead        {100 * (service / total - 1):6.1f} %")
PY
