#!/usr/bin/env bash
# Stops what scripts/up.sh started (API, worker, beat) with SIGTERM, so each shuts down
# gracefully. Leaves PostgreSQL, RabbitMQ and the S3 server running; pass --all to stop
# the S3 server too.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${DG_RUN_DIR:-$PWD/.run}

for name in api worker beat demo-services; do
  pidfile="$RUN_DIR/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then echo "$name did not stop in 30s; killing"; kill -KILL "$pid" || true; fi
    echo "stopped $name"
  fi
  rm -f "$pidfile"
done
if [ "${1:-}" = "--all" ]; then scripts/services.sh stop-s3; fi
