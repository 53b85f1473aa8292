#!/usr/bin/env bash
# A real job through the running stack (scripts/up.sh runs this; it can be run again):
# a repository with secrets planted in its history (on main, on a branch only, and in a
# file deleted later) is pushed to the local demo git server, then driven over the REST
# API: create, wait for awaiting_selection, select, clean, download, push to a second
# repository, and the result is checked by cloning it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${DG_RUN_DIR:-$PWD/.run}
# shellcheck disable=SC1091
. "$RUN_DIR/env"
# shellcheck disable=SC1091
. "$RUN_DIR/demo-services"
API="http://${API_ADDR}/api/v2"
USER_ID=demo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Values shaped like real tokens (they are not valid anywhere).
AWS=AKIAM6COX6AQXF6LI3U3
STRIPE=sk_live_YqDRV8SKN8qU577SGwdUoxkr
GITHUB=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
SLACK=xoxb-319895298309-5514929746018-Gj7tMzkv1HvLOGDQfpzE0F4y

g() { git -c user.name=Demo -c user.email=demo@example.com -c init.defaultBranch=main "$@"; }
authed() { echo "$1" | sed "s#://#://${DEMO_GIT_USER}:${DEMO_GIT_PASSWORD}@#"; }
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }
call() { # method path [json]
  curl -sS -X "$1" "$API$2" -H "X-User-ID: $USER_ID" -H 'Content-Type: application/json' ${3:+-d "$3"}
}
wait_for() { # job status
  local status=""
  for _ in $(seq 1 600); do
    status=$(call GET "/jobs/$1" | field 'd["job"]["status"]')
    [ "$status" = "$2" ] && return 0
    case $status in failed|cancelled|completed|pushed|cleaned|awaiting_selection)
      echo "job $1 is $status, not $2:"; call GET "/jobs/$1"; echo; return 1;;
    esac
    sleep 0.2
  done
  echo "job $1 did not reach $2"; return 1
}

echo "-- making the demo repository"
g init -q "$work/src" && cd "$work/src"
echo "# payments service" > README.md && g add . && g commit -qm "initial commit"
mkdir -p config deploy notes
printf 'AWS_ACCESS_KEY_ID=%s\n' "$AWS" > config/app.env && g add . && g commit -qm "configuration"
printf 'STRIPE_KEY=%s\n' "$STRIPE" > deploy/old.env && g add . && g commit -qm "deploy settings"
g rm -q deploy/old.env && g commit -qm "remove deploy settings"
printf 'slack bot (a test fixture) %s\n' "$SLACK" > notes/fixture.txt && g add . && g commit -qm "test fixture"
g checkout -qb feature && mkdir -p ci && echo "$GITHUB" > ci/token && g add . && g commit -qm "ci token"
g checkout -q main && g tag -a v1.0 -m "release 1.0"
g push -q --mirror "$(authed "$DEMO_GIT_BASE/demo.git")"
cd - >/dev/null

echo "-- creating the job"
job=$(call POST /jobs "{\"source_url\": \"$DEMO_GIT_BASE/demo.git\", \"source_credentials_id\": \"demo-git\"}" | field 'd["id"]')
echo "job $job"
wait_for "$job" awaiting_selection
detail=$(call GET "/jobs/$job")
found=$(echo "$detail" | field 'd["job"]["total_secrets_found"]')
echo "found $found secrets:"
echo "$detail" | field '"\n".join("  %s  %-28s %s" % (s["secret_value_preview"], s["secret_type"], s["file_path"]) for s in d["secrets"])'
selected=$(echo "$detail" | field '",".join("\"%s\"" % s["id"] for s in d["secrets"] if s["file_path"] != "notes/fixture.txt")')
fixture=$(echo "$detail" | field '",".join("\"%s\"" % s["id"] for s in d["secrets"] if s["file_path"] == "notes/fixture.txt")')

echo "-- selecting all but the test fixture (marked a false positive), cleaning"
call POST "/jobs/$job/secrets/select" "{\"secret_ids\": [$selected], \"mark_false_positives\": [$fixture]}" >/dev/null
call POST "/jobs/$job/clean" '{}' >/dev/null
wait_for "$job" cleaned
cleaned=$(call GET "/jobs/$job" | field 'd["job"]["secrets_cleaned"]')

echo "-- downloading"
curl -sS -L -o "$work/cleaned.zip" -H "X-User-ID: $USER_ID" "$API/jobs/$job/download"
echo "downloaded $(wc -c <"$work/cleaned.zip") bytes"

echo "-- pushing to a second repository"
call POST "/jobs/$job/push" "{\"target_platform\": \"generic\", \"target_url\": \"$DEMO_GIT_BASE/demo-clean.git\", \"target_credentials_id\": \"demo-git\", \"force_push\": true}" >/dev/null
wait_for "$job" pushed
refs=$(call GET "/jobs/$job" | field '" ".join(r["refname"] for r in d["job"]["push_result"]["refs"])')

git clone -q --mirror "$(authed "$DEMO_GIT_BASE/demo-clean.git")" "$work/check.git"
history=$(git -C "$work/check.git" log --all -p)
for value in "$AWS" "$STRIPE" "$GITHUB"; do
  if grep -qF "$value" <<<"$history"; then echo "FAILED: a selected secret reached the target"; exit 1; fi
done
grep -qF "$SLACK" <<<"$history" || { echo "FAILED: the unselected secret is missing"; exit 1; }

cat <<TXT

== demo job $job
  secrets found     $found (main, a branch only, a deleted file, a test fixture)
  secrets cleaned   $cleaned (every commit of every ref rewritten; the fixture kept)
  pushed refs       $refs
  verified          a fresh clone of $DEMO_GIT_BASE/demo-clean.git holds none of the cleaned values
  RabbitMQ UI       http://127.0.0.1:15672 (guest/guest): Queues tab, deployguard.scan / .clean / .push
                    show each task's message rate; deployguard.dead holds failed tasks
  Job in the API    curl -H 'X-User-ID: demo' $API/jobs/$job
TXT
