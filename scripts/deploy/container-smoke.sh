#!/usr/bin/env bash
# A real job through the API, a worker and beat running under the constraints the image
# and the Kubernetes manifests put on them, with no container engine: uid/gid 10001, a
# read-only root filesystem with only the work directory and a fresh /tmp writable, no
# capabilities, no new privileges. Each binary gets a mount namespace of its own
# (unshare) and drops to that user (setpriv). scripts/demo.sh then drives the job:
# scan, select, clean, download, push, and a clone of the pushed result.
#
# Its own database, RabbitMQ vhost, bucket and ports (18000, 19100, 19101), so it runs
# beside scripts/up.sh. Needs root (namespaces, setpriv). Run by scripts/test.sh;
# DG_SMOKE_PROFILE=release uses release binaries.
#
# DG_SMOKE_IMAGE=IMAGE runs the three from that image instead, with podman and the
# options a careful `docker run` would use (--read-only, --cap-drop ALL,
# no-new-privileges, the image's own user), on the host network. scripts/deploy/
# image-check.sh sets it, with the podman settings (CONTAINERS_CONF) this machine needs.
#
# One run at a time (a lock); a run starts by sweeping what a killed one left behind.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
PROFILE=${DG_SMOKE_PROFILE:-debug}
NAME=deployguard_smoke
VHOST=deployguard-smoke
BUCKET=deployguard-smoke
S3_STATE=${DG_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/deployguard}/s3
UID_GID=10001
IMAGE=${DG_SMOKE_IMAGE:-}

fail() { printf 'container-smoke: %s\n' "$*" >&2; exit 1; }
step() { printf -- '-- %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || fail "needs root (mount namespaces, setpriv)"
command -v unshare >/dev/null && command -v setpriv >/dev/null || fail "needs util-linux"

psql_admin() {
  PGOPTIONS='-c client_min_messages=warning' runuser -u postgres -- \
    psql -q -v ON_ERROR_STOP=1 -d postgres "$@"
}
reset_state() {
  psql_admin -c "DROP DATABASE IF EXISTS $NAME WITH (FORCE)" >/dev/null
  rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
  rm -rf "${S3_STATE:?}/$BUCKET"
}

# Containers carry this label, so a later run finds those a killed run left running.
LABEL=deployguard-container-smoke
remove_containers() {
  command -v podman >/dev/null || return 0
  podman ps -aq --filter "label=$LABEL" | xargs -r podman rm -f -t 10 >/dev/null 2>&1 || true
}

exec 9>/var/tmp/deployguard-container-smoke.lock
flock -w 900 9 || fail "another run holds /var/tmp/deployguard-container-smoke.lock"
# What a killed run left: containers, processes, run directories, its database, vhost
# and bucket. (Nothing started below inherits the lock's descriptor: `9>&-`.)
remove_containers
pkill -KILL -f '/var/tmp/deployguard-container-smoke\.[^/]*/bin/' || true
rm -rf /var/tmp/deployguard-container-smoke.*/
reset_state

pids=()
cleanup() {
  local status=$?
  [ -z "$IMAGE" ] || remove_containers
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ] && [ -d "$RUN" ]; then
    for log in "$RUN"/*.log; do printf '\n--- %s (last lines)\n' "$log"; tail -n 15 "$log"; done
  fi
  reset_state || true
  rm -rf "$RUN"
}
# Outside /tmp, which each sandbox replaces with an empty one; made traversable below,
# as uid 10001 runs the binaries from here.
RUN=$(mktemp -d /var/tmp/deployguard-container-smoke.XXXXXX)
trap cleanup EXIT

step "binaries ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --workspace --bins
else
  cargo build --locked --workspace --bins
fi
mkdir -p "$RUN/bin" "$RUN/work" "$RUN/home"
for bin in deployguard-api deployguard-worker deployguard-beat deployguard-demo-services; do
  cp "$CARGO_TARGET_DIR/$PROFILE/$bin" "$RUN/bin/"
done
chmod 755 "$RUN" "$RUN/bin"
# As in the image: the user owns its home and the work directory; only the second is
# on a writable filesystem.
chown "$UID_GID:$UID_GID" "$RUN/work" "$RUN/home"
chmod 700 "$RUN/work" "$RUN/home"

for port in 18000 19100 19101; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || fail "port $port is taken"
done

step "a database, vhost and bucket of its own"
reset_state
psql_admin -c "CREATE DATABASE $NAME OWNER ${DG_PG_USER:-deployguard}" >/dev/null
rabbitmqctl -q add_vhost "$VHOST" >/dev/null
rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null

# The demo's git server and credential service stand for the outside world: unconfined.
"$RUN/bin/deployguard-demo-services" "$RUN/demo-services" >>"$RUN/demo-services.log" 2>&1 9>&- &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$RUN/demo-services" ] && break; sleep 0.1; done
[ -s "$RUN/demo-services" ] || fail "the demo services did not start"
# shellcheck disable=SC1091
. "$RUN/demo-services"

cat >"$RUN/env" <<ENV
export DATABASE_URL=postgresql://${DG_PG_USER:-deployguard}:${DG_PG_PASSWORD:-deployguard}@127.0.0.1:5432/$NAME
export AMQP_URL=amqp://guest:guest@127.0.0.1:5672/$VHOST
export S3_ENDPOINT_URL=http://127.0.0.1:${DG_S3_PORT:-9000}
export S3_ACCESS_KEY=${DG_S3_ACCESS_KEY:-deployguard-dev}
export S3_SECRET_KEY=${DG_S3_SECRET_KEY:-deployguard-dev-secret}
export S3_BUCKET=$BUCKET
export S3_CREATE_BUCKET=true
export API_ADDR=127.0.0.1:18000
export WORKER_METRICS_ADDR=127.0.0.1:19100
export BEAT_METRICS_ADDR=127.0.0.1:19101
export LOG_FORMAT=json
export AUTH_SERVICE_URL=$DEMO_AUTH_SERVICE_URL
export URL_ALLOWLIST=127.0.0.0/8
export ALLOW_HTTP_URLS=true
export WORK_DIR=$RUN/work
export HOME=$RUN/home
export SECRET_HASH_KEY=$(openssl rand -base64 48 | tr -d '\n')
export REPORT_KEYS=k1:$(openssl rand -base64 32)
ENV
chmod 600 "$RUN/env"
# shellcheck disable=SC1091
. "$RUN/env"

# Inside a new mount namespace: keep the work directory writable, make every other
# filesystem read-only (as a container's: /proc, /sys and /dev aside), give /tmp an
# empty tmpfs, then become uid 10001 with no capabilities.
cat >"$RUN/sandbox.sh" <<'SANDBOX'
set -euo pipefail
mount --make-rprivate /
mount --bind "$WORK_DIR" "$WORK_DIR"
findmnt -rn -o TARGET | while read -r target; do
  target=$(printf '%b' "$target") # findmnt escapes blanks as \x20
  case $target in
    /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$WORK_DIR") continue ;;
  esac
  mount -o remount,bind,ro "$target"
done
mount -t tmpfs -o mode=1777,size=256m tmpfs /tmp
exec setpriv --reuid "$SANDBOX_UID" --regid "$SANDBOX_UID" --clear-groups \
  --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
SANDBOX

# The image mode's container options; its WORK_DIR and HOME are the image's.
grep -v -E '^export (WORK_DIR|HOME)=' "$RUN/env" | sed 's/^export //' >"$RUN/env.list"
chmod 600 "$RUN/env.list"
container() { # name command...
  local name=$1; shift
  # The image's HEALTHCHECK is run by hand below: podman's timer for it needs systemd.
  podman run --label "$LABEL" --name "$name" --network host --read-only --read-only-tmpfs=false \
    --no-healthcheck \
    --tmpfs /tmp:rw,size=256m \
    --cap-drop ALL --security-opt no-new-privileges --env-file "$RUN/env.list" \
    -v "$RUN/work:/work" "$IMAGE" "$@"
}

step "api, worker and beat as uid $UID_GID on a read-only root filesystem${IMAGE:+ (image $IMAGE)}"
start() { # name binary [args]
  local name=$1; shift
  if [ -n "$IMAGE" ]; then
    container "dg-smoke-$name-$$" "$@" >>"$RUN/$name.log" 2>&1 9>&- &
  else
    SANDBOX_UID=$UID_GID unshare --mount -- bash "$RUN/sandbox.sh" "$RUN/bin/$@" \
      >>"$RUN/$name.log" 2>&1 9>&- &
  fi
  pids+=($!)
  eval "${name}_pid=$!"
}
start api deployguard-api serve
start worker deployguard-worker
start beat deployguard-beat

wait_ready() { # what url pid
  for _ in $(seq 1 240); do
    curl -fsS -m 2 "$2" >/dev/null 2>&1 && return 0
    kill -0 "$3" 2>/dev/null || fail "$1 exited"
    sleep 0.5
  done
  fail "$1 not ready: $2"
}
# shellcheck disable=SC2154 # set by start
{
  wait_ready api http://127.0.0.1:18000/api/v2/health/ready "$api_pid"
  wait_ready worker http://127.0.0.1:19100/health/ready "$worker_pid"
  wait_ready beat http://127.0.0.1:19101/health/ready "$beat_pid"
  for name in api worker beat; do
    pid_var=${name}_pid
    pid=${!pid_var}
    # In the image, the container's first process (tini, which runs the binary).
    [ -z "$IMAGE" ] || pid=$(podman inspect -f '{{.State.Pid}}' "dg-smoke-$name-$$")
    [ "$(stat -c %u "/proc/$pid")" = "$UID_GID" ] || fail "$name does not run as uid $UID_GID"
    # No capability even in the bounding set (--cap-drop ALL), no new privileges.
    grep -q '^CapBnd:[[:space:]]*0*$' "/proc/$pid/status" || fail "$name may hold capabilities"
    grep -q '^NoNewPrivs:[[:space:]]*1$' "/proc/$pid/status" || fail "$name may gain privileges"
    awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | grep -q '^ro' ||
      fail "$name's root filesystem is writable"
  done
}
# The image's own HEALTHCHECK passes in every role, run as Docker runs it (exec).
if [ -n "$IMAGE" ]; then
  podman image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE" | python3 -c '
import json, sys
test = json.load(sys.stdin)
assert test and test[0] == "CMD", f"HEALTHCHECK {test!r} is not in exec form"
sys.stdout.write("\0".join(test[1:]))' >"$RUN/healthcheck" || fail "the image has no HEALTHCHECK"
  for name in api worker beat; do
    xargs -0 podman exec "dg-smoke-$name-$$" <"$RUN/healthcheck" >/dev/null ||
      fail "the image's HEALTHCHECK fails for $name"
  done
  echo "   the image's HEALTHCHECK passes for api, worker and beat"
fi
# What the binaries could write besides: nothing but WORK_DIR and /tmp.
if [ -n "$IMAGE" ]; then
  probe() {
    local code=0
    container "dg-smoke-probe-$$" sh -c "$1" >/dev/null 2>&1 || code=$?
    podman rm -f "dg-smoke-probe-$$" >/dev/null 2>&1 || true
    return "$code"
  }
  home=/home/deployguard
  work_dir=/work
else
  probe() { SANDBOX_UID=$UID_GID unshare --mount -- bash "$RUN/sandbox.sh" sh -c "$1" 2>/dev/null; }
  home=$HOME
  work_dir=$WORK_DIR
fi
# Both are writable for uid 10001 but for the read-only filesystem.
for dir in "$home" /var/tmp; do
  ! probe "touch '$dir/.probe'" || fail "a sandboxed process can write to $dir"
done
probe "touch /tmp/.probe && touch '$work_dir/.probe' && rm '$work_dir/.probe'" ||
  fail "a sandboxed process cannot write to /tmp and WORK_DIR"
echo "   each runs as uid $UID_GID, no capabilities; only WORK_DIR and /tmp are writable"

step "a real job end to end (scripts/demo.sh)"
DG_RUN_DIR=$RUN scripts/demo.sh

step "SIGTERM: each stops cleanly"
for name in api worker beat; do
  pid_var=${name}_pid
  pid=${!pid_var}
  code=0
  if [ -n "$IMAGE" ]; then
    # As `docker stop` does: SIGTERM to the container's tini, which passes it on.
    podman stop -t 30 "dg-smoke-$name-$$" >/dev/null
    code=$(podman inspect -f '{{.State.ExitCode}}' "dg-smoke-$name-$$")
    podman rm "dg-smoke-$name-$$" >/dev/null
    wait "$pid" || true
  else
    kill -TERM "$pid"
    wait "$pid" || code=$?
  fi
  [ "$code" -eq 0 ] || fail "$name exited $code after SIGTERM"
done
find "$RUN/work" -mindepth 1 -maxdepth 1 | grep -q . && echo "   work dir left: $(ls "$RUN/work")"
echo "container constraints: ok"
