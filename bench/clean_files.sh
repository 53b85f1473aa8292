#!/usr/bin/env bash
# Removing whole files from history: `deployguard clean --delete-path` against
# `git filter-repo --invert-paths`, and `--strip-blobs-bigger-than` against filter-repo's
# option of the same name, on one repository, with proof that both results have the same
# tree on every ref.
#
#   bench/clean_files.sh REPO      a local repository (a mirror clone of a real one)
#
# Environment: DELETE_NAME (a file name removed at any depth, default README.md),
# STRIP_SIZE (default 100K), RUNS (deployguard runs, best reported, default 3), DG (a
# deployguard binary instead of building one), BENCH_DIR (work directory, default
# ~/.cache/deployguard/bench). filter-repo runs once per case with --prune-empty never and
# --prune-degenerate never, so that both keep every commit.
#
# Checks: path deletion must give the same tree on every ref both results have. Blob
# stripping is checked by size (no reachable blob of either result is bigger than the
# limit): filter-repo drops a too-big version from the commit that brings it, so the
# path keeps its earlier, smaller version in that commit and after it, where deployguard
# removes the file (as BFG does); the refs whose trees agree are counted all the same.
#
# Exit status: 0 when both cases pass their check; 1 when not; 2 on a setup failure.
set -euo pipefail
{
[ $# -ge 1 ] || { echo "usage: $0 REPO" >&2; exit 2; }
REPO=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/deployguard/bench}
RUNS=${RUNS:-3}
DELETE_NAME=${DELETE_NAME:-README.md}
STRIP_SIZE=${STRIP_SIZE:-100K}
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
KEEP=${KEEP:-0}
log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

DG=${DG:-}
if [ -z "$DG" ]; then
  cargo build --release --locked -p deployguard-cli >&2
  DG="$CARGO_TARGET_DIR/release/deployguard"
fi
if ! git filter-repo --version >/dev/null 2>&1; then
  log "installing git-filter-repo from PyPI"
  python3 -m pip install --quiet git-filter-repo >&2
fi
git filter-repo --version >/dev/null 2>&1 || die "git filter-repo is not on PATH"

WORK=$(mktemp -d "$BENCH_DIR/clean-files.XXXXXX")
if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
fresh() { rm -rf "$WORK/$1"; git clone -q --mirror --no-local "$REPO" "$WORK/$1"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# Every ref's tree, `name tree` per line, refs filter-repo keeps only.
trees() {
  git -C "$1" for-each-ref --format='%(refname) %(objectname)' |
    while read -r name _; do
      printf '%s %s\n' "$name" "$(git -C "$1" rev-parse "$name^{tree}" 2>/dev/null || echo none)"
    done | sort
}

# The biggest blob the refs of a repository reach.
biggest() {
  git -C "$1" rev-list --objects --all | cut -d' ' -f1 |
    git -C "$1" cat-file --batch-check='%(objecttype) %(objectsize)' |
    awk '$1 == "blob" && $2 > max { max = $2 } END { print max + 0 }'
}

run_case() { # name, check (trees|LIMIT_BYTES), deployguard flags..., --, filter-repo flags...
  local name=$1 check=$2; shift 2
  local dg_flags=() fr_flags=()
  while [ "$1" != -- ]; do dg_flags+=("$1"); shift; done
  shift
  fr_flags=("$@")
  local best=""
  for run in $(seq "$RUNS"); do
    rm -rf "$WORK/dg.bundle" "$WORK/dg-work"
    mkdir -p "$WORK/dg-work"
    local start end t
    start=$(now)
    "$DG" clean "$REPO" "${dg_flags[@]}" -o "$WORK/dg.bundle" --work-dir "$WORK/dg-work" \
      --report "$WORK/dg-report.json" --no-progress 2>"$WORK/dg.log" ||
      { cat "$WORK/dg.log" >&2; die "deployguard failed"; }
    end=$(now)
    t=$(secs "$start" "$end")
    log "$name: deployguard run $run: ${t}s"
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $t < $best else 1)"; then best=$t; fi
  done
  rm -rf "$WORK/dg.git"
  git -c init.defaultBranch=main clone -q --mirror "$WORK/dg.bundle" "$WORK/dg.git"
  fresh fr.git
  local start end fr
  start=$(now)
  git -C "$WORK/fr.git" filter-repo --force --quiet --prune-empty never \
    --prune-degenerate never "${fr_flags[@]}" >"$WORK/fr.log" 2>&1 ||
    { cat "$WORK/fr.log" >&2; die "filter-repo failed"; }
  end=$(now)
  fr=$(secs "$start" "$end")
  trees "$WORK/dg.git" >"$WORK/dg.trees"
  trees "$WORK/fr.git" >"$WORK/fr.trees"
  # filter-repo drops refs it cannot rewrite; compare the refs both results have.
  local differ
  differ=$(join "$WORK/dg.trees" "$WORK/fr.trees" | awk '$2 != $3' | wc -l)
  local common
  common=$(join "$WORK/dg.trees" "$WORK/fr.trees" | wc -l)
  local removed bundle
  removed=$(python3 -c "import json; r=json.load(open('$WORK/dg-report.json')); f=r['files']; print(f['entries_removed'], f['blobs_removed'])")
  bundle=$(python3 -c "import json; print(json.load(open('$WORK/dg-report.json'))['bundle_bytes'] >> 20)")
  local ratio
  ratio=$(python3 -c "print(f'{$fr / $best:.1f}')")
  printf '| %s | %s | %s s | %s s | %s× | %s/%s refs same tree | %s (entries, blobs) | %s MiB |\n' \
    "$(basename "$REPO")" "$name" "$best" "$fr" "$ratio" "$((common - differ))" "$common" "$removed" "$bundle"
  if [ "$check" = trees ]; then
    [ "$differ" = 0 ] || { log "$name: $differ ref(s) differ"; return 1; }
  else
    local ours theirs
    ours=$(biggest "$WORK/dg.git")
    theirs=$(biggest "$WORK/fr.git")
    log "$name: biggest blob left: deployguard $ours, filter-repo $theirs (limit $check)"
    [ "$ours" -le "$check" ] && [ "$theirs" -le "$check" ] || return 1
  fi
}

log "repository: $REPO ($(git -C "$REPO" rev-list --all --count) commits, $(git -C "$REPO" for-each-ref | wc -l) refs)"
echo '| repository | case | deployguard (best) | filter-repo | speed-up | trees | removed | bundle |'
echo '|---|---|---|---|---|---|---|---|'
status=0
run_case "--delete-path $DELETE_NAME" trees --delete-path "$DELETE_NAME" -- \
  --invert-paths --path-glob "*/$DELETE_NAME" --path "$DELETE_NAME" || status=1
LIMIT=$(python3 -c "s='$STRIP_SIZE'; m={'K':1024,'M':1024**2,'G':1024**3}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))")
run_case "--strip-blobs-bigger-than $STRIP_SIZE" "$LIMIT" --strip-blobs-bigger-than "$STRIP_SIZE" -- \
  --strip-blobs-bigger-than "$STRIP_SIZE" || status=1
exit $status
}
