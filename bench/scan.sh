#!/usr/bin/env bash
# Scanner benchmark: full-history scan against the git read floor, and working-tree scan
# against ripsecrets and detect-secrets, side by side in one run.
#
#   bench/scan.sh                 build the synthetic repository (bench/make_repo.py) and measure
#   bench/scan.sh /path/to/repo   measure an existing repository instead
#
# Environment: BENCH_DIR (work directory, default ~/.cache/deployguard/bench),
# BENCH_COMMITS / BENCH_FILES / BENCH_FILE_KIB (synthetic repository size), BENCH_TREE
# (a directory for the work-tree comparison, default: a checkout of the repository's HEAD),
# RUNS (repetitions per measurement, default 3; the best is reported).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/deployguard/bench}
RUNS=${RUNS:-3}
mkdir -p "$BENCH_DIR"

log() { printf '[bench] %s\n' "$*" >&2; }

# --- tools ---------------------------------------------------------------------------
cargo build --release --locked -p deployguard-cli >&2
DG="$CARGO_TARGET_DIR/release/deployguard"
if ! command -v ripsecrets >/dev/null; then
  log "installing ripsecrets from crates.io"
  cargo install ripsecrets --locked --quiet >&2
fi
if ! python3 -c 'import detect_secrets' 2>/dev/null; then
  log "installing detect-secrets from PyPI"
  python3 -m pip install --quiet detect-secrets >&2
fi
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2
fi

# --- the repository ------------------------------------------------------------------
if [ $# -ge 1 ]; then
  REPO=$(cd "$1" && pwd)
else
  COMMITS=${BENCH_COMMITS:-30000} FILES=${BENCH_FILES:-2000} KIB=${BENCH_FILE_KIB:-48}
  REPO="$BENCH_DIR/synthetic-$COMMITS-$FILES-$KIB.git"
  if [ ! -d "$REPO" ]; then
    log "building $REPO"
    python3 bench/make_repo.py "$REPO.tmp" --commits "$COMMITS" --files "$FILES" --file-kib "$KIB" >&2
    mv "$REPO.tmp" "$REPO"
  fi
fi
TREE=${BENCH_TREE:-$BENCH_DIR/worktree-$(basename "$REPO" .git)}
if [ ! -d "$TREE" ]; then
  log "checking out HEAD into $TREE"
  git clone -q --no-local "$REPO" "$TREE.tmp" >&2 && rm -rf "$TREE.tmp/.git" && mv "$TREE.tmp" "$TREE"
fi

# --- measuring -----------------------------------------------------------------------
# best of $RUNS: wall seconds and peak RSS (MiB) of a command; output discarded.
measure() {
  local best="" rss="" tf
  tf=$(mktemp)
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -o "$tf" -f '%e %M' "$@" >/dev/null 2>&1 || true
    local out secs kib
    out=$(tail -1 "$tf")
    secs=${out% *} kib=${out#* }
    if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; rss=$((kib / 1024)); fi
  done
  rm -f "$tf"
  printf '%s %s\n' "$best" "$rss"
}

blobs=$(git -C "$REPO" rev-list --objects --all | git -C "$REPO" cat-file --batch-check='%(objecttype) %(objectsize) %(rest)' | awk '$1=="blob"{n++; s+=$2} END{printf "%d blobs, %.2f GiB", n, s/1073741824}')
commits=$(git -C "$REPO" rev-list --all --count)
tree_size=$(du -sh "$TREE" | cut -f1)
log "warming the page cache"
git -C "$REPO" cat-file --batch-all-objects --batch >/dev/null

read -r floor floor_rss < <(measure sh -c "git -C '$REPO' cat-file --batch-all-objects --batch")
read -r ours ours_rss < <(measure "$DG" scan --no-progress --format json -o /dev/null "$REPO")
read -r tree_ours tree_ours_rss < <(measure "$DG" scan --no-progress --no-git --format json -o /dev/null "$TREE")
read -r rip rip_rss < <(measure ripsecrets "$TREE")
# detect-secrets resolves paths against the current directory.
read -r ds ds_rss < <(RUNS=1 measure sh -c "cd '$TREE' && python3 -m detect_secrets scan --all-files .")

"$DG" scan --no-progress --format json -o "$BENCH_DIR/last-report.json" "$REPO" || true
found=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['secrets']))" "$BENCH_DIR/last-report.json")
planted=""
if [ -f "$REPO/planted-secrets.txt" ]; then
  planted=$(python3 - "$REPO/planted-secrets.txt" "$BENCH_DIR/last-report.json" <<'PY'
import json, sys
planted = [l.split() for l in open(sys.argv[1]) if l.strip()]
# The report holds previews only; match planted values by preview and rule.
report = json.load(open(sys.argv[2]))
seen = {(s["rule_id"], s["preview"]) for s in report["secrets"]}
def preview(v):
    n = min(len(v) // 6, 3)
    return v[:n] + "…" + v[-n:]
hit = sum((rule, preview(value)) in seen for rule, value in planted)
print(f"{hit}/{len(planted)} planted secrets found")
PY
)
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
cat <<REPORT
## $(date -u +%Y-%m-%d) — $(basename "$REPO")
Machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(git --version).
Repository: $commits commits, $blobs of distinct reachable blobs; work tree $tree_size.
Command: \`bench/scan.sh $*\` (best of $RUNS; page cache warm).

| measurement | wall s | peak RSS MiB |
|---|---:|---:|
| read floor: \`git cat-file --batch-all-objects --batch\` | $floor | $floor_rss |
| deployguard full-history scan | $ours | $ours_rss |
| deployguard work-tree scan (\`--no-git\`) | $tree_ours | $tree_ours_rss |
| ripsecrets (work tree) | $rip | $rip_rss |
| detect-secrets \`--all-files\` (work tree, 1 run) | $ds | $ds_rss |

History scan / read floor: $(awk "BEGIN{printf \"%.2f\", $ours / $floor}")×. Work tree, ripsecrets / deployguard: $(awk "BEGIN{printf \"%.2f\", $rip / $tree_ours}")×.
Secrets reported in history: $found. ${planted}
REPORT
