#!/usr/bin/env bash
# History-rewrite benchmark: `deployguard clean` against `git filter-repo --replace-text`
# on the same repository and the same selection of values, with proof that both produce
# the same trees, and the git fast-export | fast-import floors for reference.
#
#   bench/clean.sh                 build the synthetic repository (bench/make_repo.py) and measure
#   bench/clean.sh /path/to/repo   measure an existing repository instead
#
# Selection: the values planted by make_repo.py (REPO/planted-secrets.txt); for a repository
# without that file, every secret `deployguard scan` finds. Values that cannot be written as
# one expressions line (containing a newline or a carriage return) are left out of the
# selection for both tools. Both tools get the same values and the same default replacement
# (***REMOVED***): deployguard as a secrets file (and, second form, as the expressions file),
# filter-repo as an expressions file with one `literal:VALUE` line per value, longest first.
#
# Every timed run works on its own fresh `git clone --mirror --no-local` copy of the
# repository, made outside the timing. filter-repo runs with --prune-empty never and
# --prune-degenerate never so that both results keep every commit.
#
# Environment: SELECTION (a file of `RULE VALUE` lines to remove instead of the planted or
# scanned values), BENCH_DIR (work directory, default ~/.cache/deployguard/bench),
# BENCH_COMMITS / BENCH_FILES / BENCH_FILE_KIB (synthetic repository size), RUNS (runs of
# deployguard and of the fast-export | fast-import floors, default 3; the best is
# reported), FILTER_REPO_RUNS (default 1), DG (a deployguard binary to use instead of
# building one), SKIP_OURS=1 (measure filter-repo and the floors only), KEEP=1 (keep the
# work directory with the results).
#
# Exit status: 0 when every check passes; 1 when a ref's tree differs between the two
# results, the commit counts differ, a selected value survives in deployguard's result, or
# the two deployguard forms disagree; 2 on a setup or tool failure.
# Functions called indirectly (trap, timed) look unreachable to shellcheck.
# shellcheck disable=SC2317
set -euo pipefail
{ # Parsed whole before it runs, so that editing this file cannot disturb a running benchmark.

# Resolve the repository argument before changing directory.
ARG_REPO=""
if [ $# -ge 1 ]; then
  ARG_REPO=$(cd "$1" && pwd)
fi
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/deployguard/bench}
RUNS=${RUNS:-3}
FILTER_REPO_RUNS=${FILTER_REPO_RUNS:-1}
SKIP_OURS=${SKIP_OURS:-0}
KEEP=${KEEP:-0}
REPLACEMENT='***REMOVED***'
mkdir -p "$BENCH_DIR"
# The same isolation for every git process, ours and filter-repo's.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# --- tools ---------------------------------------------------------------------------
DG=${DG:-}
if [ "$SKIP_OURS" != 1 ]; then
  if [ -z "$DG" ]; then
    cargo build --release --locked -p deployguard-cli >&2
    DG="$CARGO_TARGET_DIR/release/deployguard"
  fi
  "$DG" clean --help >/dev/null 2>&1 ||
    die "$DG has no working 'clean' command (SKIP_OURS=1 measures filter-repo and the floors only)"
fi
if ! git filter-repo --version >/dev/null 2>&1; then
  log "installing git-filter-repo from PyPI"
  python3 -m pip install --quiet git-filter-repo >&2
  git filter-repo --version >/dev/null 2>&1 || die "git filter-repo is not on PATH after installing it"
fi
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2
fi
FR_VERSION=$(python3 -c 'import importlib.metadata as m; print(m.version("git-filter-repo"))' 2>/dev/null || echo unknown)

# --- the repository ------------------------------------------------------------------
if [ -n "$ARG_REPO" ]; then
  REPO=$ARG_REPO
else
  COMMITS=${BENCH_COMMITS:-30000} FILES=${BENCH_FILES:-2000} KIB=${BENCH_FILE_KIB:-48}
  REPO="$BENCH_DIR/synthetic-$COMMITS-$FILES-$KIB.git"
  if [ ! -d "$REPO" ]; then
    [ ! -e "$REPO.tmp" ] ||
      die "$REPO.tmp exists: a build is running (wait for it) or was interrupted (remove it)"
    log "building $REPO"
    python3 bench/make_repo.py "$REPO.tmp" --commits "$COMMITS" --files "$FILES" --file-kib "$KIB" >&2
    mv "$REPO.tmp" "$REPO"
  fi
fi
git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 || die "$REPO is not a git repository"
GIT_DIR_ABS=$(cd "$REPO" && cd "$(git rev-parse --git-dir)" && pwd)

# Absolute: `git -C COPY filter-repo` resolves relative paths against COPY.
WORK=$(cd "$(mktemp -d "$BENCH_DIR/clean.XXXXXX")" && pwd)
cleanup() { if [ "$KEEP" = 1 ]; then log "results kept in $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
SECRETS="$WORK/secrets.json" EXPR="$WORK/expressions.txt" VALUES="$WORK/values.txt"

# --- the selection -------------------------------------------------------------------
planted="$GIT_DIR_ABS/planted-secrets.txt"
[ -f "$REPO/planted-secrets.txt" ] && planted="$REPO/planted-secrets.txt"
# A selection of one's own, in the same `RULE VALUE` lines (a real repository has no
# planted file, and may hold no secret worth a benchmark).
[ -n "${SELECTION:-}" ] && planted=$(cd "$(dirname "$SELECTION")" && pwd)/$(basename "$SELECTION")
scanned=""
if [ "$SKIP_OURS" != 1 ]; then
  # The real secrets file, so that ids are exactly the ones `deployguard scan` gives.
  log "scanning for the secrets file"
  scanned="$WORK/scanned-secrets.json"
  rc=0
  "$DG" scan --no-progress --format json -o /dev/null --secrets-out "$scanned" "$REPO" || rc=$?
  [ "$rc" -le 1 ] || die "deployguard scan failed (exit $rc)"
fi
selection=$(SELECTION_SOURCE=${SELECTION:+"from $(basename "$SELECTION")"} python3 - "$planted" "$scanned" "$SECRETS" "$EXPR" "$VALUES" "$REPLACEMENT" <<'PY'
import hashlib, hmac, json, os, struct, sys

planted_path, scanned_path, secrets_path, expr_path, values_path, replacement = sys.argv[1:]

def fingerprint(rule, value):
    # HashKey::builtin().fingerprint (engine/src/scan/report.rs): HMAC-SHA-256 over
    # length-prefixed parts, first 16 bytes in hex.
    mac = hmac.new(b"deployguard fingerprint key v1", digestmod=hashlib.sha256)
    for part in (b"fingerprint", rule.encode(), value.encode()):
        mac.update(struct.pack(">Q", len(part)))
        mac.update(part)
    return mac.hexdigest()[:32]

scanned = []
key_id = "builtin-v1"
if scanned_path:
    doc = json.load(open(scanned_path))
    key_id = doc["hash_key_id"]
    scanned = doc["secrets"]

planted = []
if os.path.isfile(planted_path):
    planted = [l.split(None, 1) for l in open(planted_path).read().splitlines() if l.strip()]
if planted:
    source = os.environ.get("SELECTION_SOURCE") or "planted by make_repo.py"
    by_value = {(s["rule_id"], s["value"]): s for s in scanned}
    chosen = []
    for rule, value in planted:
        entry = by_value.get((rule, value))
        if entry is None:
            if scanned:
                print(f"planted {rule} value not in the scan's secrets file", file=sys.stderr)
            entry = {"id": fingerprint(rule, value), "rule_id": rule, "value": value}
        chosen.append(entry)
elif scanned_path:
    source = "every secret deployguard scan found"
    chosen = scanned
else:
    source = "none (no planted-secrets.txt entries, and no scan with SKIP_OURS=1)"
    chosen = []

seen, kept, dropped = set(), [], 0
for s in chosen:
    v = s["value"]
    if not v or "\n" in v or "\r" in v:
        dropped += 1
        continue
    if v not in seen:
        seen.add(v)
        kept.append(s)
# Longest first: filter-repo applies literals one after another, so a value that is a
# substring of another must come after it.
kept.sort(key=lambda s: (-len(s["value"].encode()), s["value"]))

fd = os.open(secrets_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump({"version": 1, "hash_key_id": key_id,
               "secrets": [{"id": s["id"], "rule_id": s["rule_id"], "value": s["value"]} for s in kept]},
              f, indent=2)
with open(expr_path, "w") as f:
    for s in kept:
        v = s["value"]
        # filter-repo splits a line at its last '==>'; give such values an explicit one.
        f.write(f"literal:{v}==>{replacement}\n" if "==>" in v else f"literal:{v}\n")
with open(values_path, "w") as f:
    for s in kept:
        f.write(s["value"] + "\n")
note = f"; {dropped} multi-line value(s) left out" if dropped else ""
print(f"{len(kept)} values, {source}{note}")
PY
)
chmod 600 "$EXPR" "$VALUES"
nvalues=$(wc -l <"$VALUES")
log "selection: $selection"
[ "$nvalues" -gt 0 ] || log "warning: the selection is empty; both tools will rewrite without replacing anything"

# --- measuring -----------------------------------------------------------------------
# timed N PREP LOGFILE CMD...: runs PREP (untimed), then CMD under GNU time, N times.
# Sets T_SECS and T_RSS (MiB) to the best run's figures; the last run's output is in LOGFILE.
T_SECS="" T_RSS=""
timed() {
  local n=$1 prep=$2 out=$3 tf line secs kib
  shift 3
  T_SECS="" T_RSS=""
  tf=$(mktemp)
  for _ in $(seq "$n"); do
    "$prep"
    if ! /usr/bin/time -o "$tf" -f '%e %M' "$@" >"$out" 2>&1; then
      log "failed: $*"
      tail -n 20 "$out" >&2
      rm -f "$tf"
      exit 2
    fi
    line=$(tail -n 1 "$tf")
    secs=${line% *} kib=${line#* }
    if [ -z "$T_SECS" ] || awk "BEGIN{exit !($secs < $T_SECS)}"; then
      T_SECS=$secs T_RSS=$((kib / 1024))
    fi
  done
  rm -f "$tf"
}

fresh_copy() { rm -rf "$1"; git clone -q --mirror --no-local "$REPO" "$1"; }

OURS_COPY="$WORK/copy-ours.git" OURS_OUT="$WORK/out-secrets" OURS2_OUT="$WORK/out-replace-text"
FR_COPY="$WORK/copy-filter-repo.git" FLOOR="$WORK/floor.git"
prep_ours() { fresh_copy "$OURS_COPY"; rm -f "$OURS_OUT".*; }
prep_ours2() { fresh_copy "$OURS_COPY"; rm -f "$OURS2_OUT".*; }
prep_fr() { fresh_copy "$FR_COPY"; }
# fast-import needs the blobs that a --no-data stream names: borrow them via alternates.
prep_floor_meta() { rm -rf "$FLOOR"; git -c init.defaultBranch=main init -q --bare "$FLOOR"; echo "$GIT_DIR_ABS/objects" >"$FLOOR/objects/info/alternates"; }
prep_floor_full() { rm -rf "$FLOOR"; git -c init.defaultBranch=main init -q --bare "$FLOOR"; }
# Into a copy that already holds every object, as filter-repo imports: fast-import skips
# objects already in a pack, so only what changes is written.
prep_floor_copy() { fresh_copy "$FLOOR"; }

blobs=$(git -C "$REPO" rev-list --objects --all | git -C "$REPO" cat-file --batch-check='%(objecttype) %(objectsize) %(rest)' | awk '$1=="blob"{n++; s+=$2} END{printf "%d distinct reachable blobs holding %.2f GiB", n, s/1073741824}')
commits=$(git -C "$REPO" rev-list --all --count)
nrefs=$(git -C "$REPO" for-each-ref --format=x | wc -l)
log "warming the page cache"
git -C "$REPO" cat-file --batch-all-objects --batch >/dev/null

log "floor: fast-export --no-data | fast-import"
# shellcheck disable=SC2016 # the inner script takes its paths as arguments
timed "$RUNS" prep_floor_meta "$WORK/floor-meta.log" bash -c 'set -o pipefail
  git -C "$1" fast-export --all --no-data --reencode=no --signed-tags=strip | git -C "$2" fast-import --force --quiet' _ "$REPO" "$FLOOR"
meta=$T_SECS meta_rss=$T_RSS
log "floor: fast-export | fast-import, full content"
# shellcheck disable=SC2016
timed "$RUNS" prep_floor_full "$WORK/floor-full.log" bash -c 'set -o pipefail
  git -C "$1" fast-export --all --reencode=no --signed-tags=strip | git -C "$2" fast-import --force --quiet' _ "$REPO" "$FLOOR"
full=$T_SECS full_rss=$T_RSS
log "floor: fast-export | fast-import, full content, into a copy holding the objects"
# shellcheck disable=SC2016
timed "$RUNS" prep_floor_copy "$WORK/floor-copy.log" bash -c 'set -o pipefail
  git -C "$1" fast-export --all --reencode=no --signed-tags=strip | git -C "$2" fast-import --force --quiet' _ "$REPO" "$FLOOR"
fullcopy=$T_SECS fullcopy_rss=$T_RSS
rm -rf "$FLOOR"

ours="" ours_rss="" ours2="" ours2_rss=""
if [ "$SKIP_OURS" != 1 ]; then
  log "deployguard clean --secrets"
  timed "$RUNS" prep_ours "$WORK/ours.log" "$DG" clean "$OURS_COPY" --secrets "$SECRETS" --all \
    --output "$OURS_OUT.bundle" --commit-map "$OURS_OUT.map" --no-progress
  ours=$T_SECS ours_rss=$T_RSS
  log "deployguard clean --replace-text"
  timed "$RUNS" prep_ours2 "$WORK/ours2.log" "$DG" clean "$OURS_COPY" --replace-text "$EXPR" \
    --output "$OURS2_OUT.bundle" --commit-map "$OURS2_OUT.map" --no-progress
  ours2=$T_SECS ours2_rss=$T_RSS
  rm -rf "$OURS_COPY"
fi

log "git filter-repo --replace-text"
timed "$FILTER_REPO_RUNS" prep_fr "$WORK/filter-repo.log" git -C "$FR_COPY" filter-repo \
  --replace-text "$EXPR" --force --prune-empty never --prune-degenerate never
fr=$T_SECS fr_rss=$T_RSS
fr_rewrite=$(sed -n 's/^New history written in \([0-9.]*\) seconds.*/\1/p' "$WORK/filter-repo.log" | tail -n 1)

# --- checks --------------------------------------------------------------------------
status=0
# "REF TREE HISTORY" for every ref: the tip's tree, and a digest of the sorted root trees
# of every commit reachable from it ("-" when the ref does not lead to a tree or commit).
# The history digest is what proves the rewrite of old commits, whose secrets no longer
# reach the tips; it costs one history walk per ref, so with more than 200 refs only the
# digest over all refs (HISTORY-ALL) is computed.
ref_trees() {
  local refs tree hist
  refs=$(git -C "$1" for-each-ref --format='%(refname)')
  while read -r ref; do
    [ -n "$ref" ] || continue
    tree=$(git -C "$1" rev-parse -q --verify "$ref^{tree}" 2>/dev/null || echo -)
    hist=-
    if [ "$(wc -l <<<"$refs")" -le 200 ]; then
      hist=$(git -C "$1" log --format=%T "$ref" 2>/dev/null | sort | sha256sum | cut -c1-16) || hist=-
    fi
    printf '%s %s %s\n' "$ref" "$tree" "$hist"
  done <<<"$refs"
  printf 'HISTORY-ALL - %s\n' "$(git -C "$1" log --all --format=%T | sort | sha256sum | cut -c1-16)"
}
ref_commits() { git -C "$1" for-each-ref --format='%(refname) %(objectname)'; }
count_values() {
  # With no patterns grep would exit before reading (SIGPIPE upstream); it exits 1 when
  # it counts nothing.
  if [ ! -s "$VALUES" ]; then echo 0; return; fi
  git -C "$1" cat-file --batch-all-objects --batch | { grep -a -c -F -f "$VALUES" || true; }
}

fr_commits=$(git -C "$FR_COPY" rev-list --all --count)
fr_left=$(count_values "$FR_COPY")
ref_trees "$FR_COPY" >"$WORK/trees-filter-repo"

verification=""
if [ "$SKIP_OURS" != 1 ]; then
  OURS_CLONE="$WORK/ours-result.git" OURS2_CLONE="$WORK/ours2-result.git"
  git -c init.defaultBranch=main clone -q --mirror "$OURS_OUT.bundle" "$OURS_CLONE"
  git -c init.defaultBranch=main clone -q --mirror "$OURS2_OUT.bundle" "$OURS2_CLONE"
  ours_commits=$(git -C "$OURS_CLONE" rev-list --all --count)
  ours_left=$(count_values "$OURS_CLONE")
  ref_trees "$OURS_CLONE" >"$WORK/trees-ours"

  table=$(python3 - "$WORK/trees-ours" "$WORK/trees-filter-repo" <<'PY'
import sys
def load(p):
    rows = (l.split() for l in open(p) if l.strip())
    return {r[0]: (r[1], r[2]) for r in rows}
ours, fr = load(sys.argv[1]), load(sys.argv[2])
# filter-repo turns a mirror's refs/remotes/origin/X into refs/heads/X; compare those as
# the one ref they are.
for name in [r for r in fr if r.startswith("refs/heads/") and r not in ours]:
    remote = "refs/remotes/origin/" + name[len("refs/heads/"):]
    if remote in ours and remote not in fr:
        fr[remote] = fr.pop(name)
all_same = ours.pop("HISTORY-ALL")[1] == fr.pop("HISTORY-ALL")[1]
missing = ("missing", "missing")
refs = sorted(set(ours) | set(fr))
diff = [r for r in refs if ours.get(r, missing) != fr.get(r, missing)]
shown = refs if len(refs) <= 40 else diff
print("| ref | deployguard tip tree | filter-repo tip tree | trees of all its commits |")
print("|---|---|---|:-:|")
for r in shown:
    (a, ha), (b, hb) = ours.get(r, missing), fr.get(r, missing)
    tip = "" if a == b else " **tip differs**"
    hist = "n/a" if ha == hb == "-" else ("same" if ha == hb else "**DIFFERENT**")
    print(f"| `{r}` | `{a[:12]}` | `{b[:12]}`{tip} | {hist} |")
if len(refs) > 40:
    print(f"\n({len(refs)} refs; only the differing ones are listed.)")
print(f"\nTREES: {len(refs) - len(diff)}/{len(refs)} refs identical (tip tree and the trees of "
      f"every commit behind it); root trees of all commits, all refs together: "
      f"{'identical' if all_same else '**DIFFERENT**'}.")
sys.exit(1 if diff or not refs or not all_same else 0)
PY
) || { status=1; }
  same_commits="no"
  if [ "$(ref_commits "$OURS_CLONE")" = "$(ref_commits "$FR_COPY")" ]; then same_commits="yes"; fi
  forms="identical refs and commit maps"
  if [ "$(ref_commits "$OURS_CLONE")" != "$(ref_commits "$OURS2_CLONE")" ]; then
    forms="**DIFFERENT refs**"; status=1
  # The same pairs; their order follows the parallel read and may differ between runs.
  elif ! cmp -s <(sort "$OURS_OUT.map") <(sort "$OURS2_OUT.map"); then
    forms="identical refs, **different commit maps**"; status=1
  fi
  [ "$ours_commits" = "$fr_commits" ] || status=1
  [ "$ours_left" = 0 ] || status=1
  verification=$(cat <<VERIFY
Commits: source $commits, deployguard $ours_commits, filter-repo $fr_commits$([ "$ours_commits" = "$fr_commits" ] || echo ' — **DIFFERENT**').
Same commit ids at every ref as filter-repo: $same_commits (informational: filter-repo also strips
signatures, re-encodes messages to UTF-8 and rewrites commit hashes quoted in messages).
Lines of \`git cat-file --batch-all-objects --batch\` holding a selected value, deployguard's result: $ours_left$([ "$ours_left" = 0 ] || echo ' — **values survive**') (filter-repo's: $fr_left).
\`--secrets\` and \`--replace-text\` forms: $forms.

$table
VERIFY
)
else
  verification="deployguard not run (SKIP_OURS=1). filter-repo result: $fr_commits commits (source $commits); lines of \`git cat-file --batch-all-objects --batch\` still holding a selected value: $fr_left."
fi

# --- report --------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
os=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null || true)
# Total size of the files named, in MiB (0 when there are none).
size_mib() { du -cb "$@" 2>/dev/null | awk 'END {printf "%.1f", $1 / 1048576}'; }
ratio() { if [ -n "$1" ] && [ -n "$2" ]; then awk "BEGIN{printf \"%.2f×\", $1 / $2}"; else echo "n/a"; fi; }
row() { if [ -n "$2" ]; then echo "| $1 | $2 | $3 |"; else echo "| $1 | not run | |"; fi; }
cat <<REPORT
## $(date -u +%Y-%m-%d) — clean: $(basename "$REPO")
Machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $os, $(git --version), git-filter-repo $FR_VERSION, $(python3 --version).
Repository: $commits commits, $nrefs refs, $blobs.
Selection: $selection; one \`literal:\` line each, default replacement \`$REPLACEMENT\`.
Command: \`bench/clean.sh${*:+ $*}\` (deployguard and floors best of $RUNS, filter-repo $FILTER_REPO_RUNS run(s);
each tool run on its own fresh \`git clone --mirror --no-local\` copy made outside the timing; page cache warm).

| measurement | wall s | peak RSS MiB |
|---|---:|---:|
| metadata floor: \`git fast-export --all --no-data --reencode=no --signed-tags=strip \| git fast-import --force --quiet\` | $meta | $meta_rss |
| full-content floor: \`git fast-export --all --reencode=no --signed-tags=strip \| git fast-import --force --quiet\`, empty repository | $full | $full_rss |
| the same into a mirror copy that already holds the objects (only changed objects written) | $fullcopy | $fullcopy_rss |
$(row "deployguard clean \`--secrets … --all\` → bundle" "$ours" "$ours_rss")
$(row "deployguard clean \`--replace-text\` → bundle" "$ours2" "$ours2_rss")
$(row "git filter-repo \`--replace-text --prune-empty never --prune-degenerate never --force\` (incl. its gc)" "$fr" "$fr_rss")

filter-repo / deployguard: $(ratio "$fr" "$ours"). deployguard / floors (metadata, full content into a copy, full content into an empty repository): $(ratio "$ours" "$meta"), $(ratio "$ours" "$fullcopy"), $(ratio "$ours" "$full").
filter-repo's own "New history written" figure (before its reflog expire and gc): ${fr_rewrite:-n/a} s.
Sizes: source packs $(size_mib "$GIT_DIR_ABS"/objects/pack/*.pack) MiB; deployguard's bundle $(size_mib "$OURS_OUT.bundle") MiB ($(ratio "$(size_mib "$OURS_OUT.bundle")" "$(size_mib "$GIT_DIR_ABS"/objects/pack/*.pack)") the source packs); filter-repo's packs after its gc $(size_mib "$FR_COPY"/objects/pack/*.pack) MiB.
Peak RSS is the largest single process (GNU time), not the sum over a pipeline. The metadata
floor imports into an empty repository that borrows the blobs through objects/info/alternates.

$verification
REPORT
exit "$status"
}
