#!/usr/bin/env bash
# Memory on a large pack: a repository whose one pack is over 2 GiB, scanned and cleaned
# by deployguard, each tool's peak RSS next to the pack's size (and git's own read floor).
#
#   bench/large_pack.sh
#
# The repository (built once in BENCH_DIR by git fast-import) holds text files of random
# base64 (which zlib cannot shrink much) rewritten commit after commit, a few lines
# changed each time so that most versions are deltas of the last, and one AWS key planted
# in one version of one file. The scan must find that key; the clean removes it.
#
# Environment: BENCH_DIR (default ~/.cache/deployguard/bench), PACK_MIB (content to
# write, default 2900, which packs to a little over 2 GiB), DG (a deployguard binary to
# use instead of building one). Prints a Markdown section for bench/RESULTS.md.
set -euo pipefail
{ # Parsed whole before it runs, so that editing this file cannot disturb a running benchmark.
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/deployguard/bench}
PACK_MIB=${PACK_MIB:-2900}
REPO="$BENCH_DIR/large-pack-$PACK_MIB.git"
KEY=AKIAZ7Q3LMNB4XKTV2PD
log() { printf '[bench] %s\n' "$*" >&2; }

DG=${DG:-}
if [ -z "$DG" ]; then
  cargo build --release --locked -p deployguard-cli >&2
  DG="$CARGO_TARGET_DIR/release/deployguard"
fi
if [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2
fi

if [ ! -d "$REPO" ]; then
  [ ! -e "$REPO.tmp" ] || { log "$REPO.tmp exists: remove it"; exit 2; }
  log "building $REPO"
  git init -q --bare "$REPO.tmp"
  python3 - "$PACK_MIB" "$KEY" <<'PY' | git -C "$REPO.tmp" -c fastimport.unpackLimit=1 fast-import --quiet
import base64, os, sys
total_mib, key = int(sys.argv[1]), sys.argv[2]
files, size = 16, 8 << 20
out = sys.stdout.buffer
# Each file: lines of 76 base64 characters.
def text(n):
    raw = base64.b64encode(os.urandom(n * 3 // 4))
    return b"\n".join(raw[i:i + 76] for i in range(0, len(raw), 76)) + b"\n"
content = [bytearray(text(size)) for _ in range(files)]
written, commit = 0, 0
while written < total_mib << 20:
    f = commit % files
    body = content[f]
    # A few lines changed per version: the new version is a small delta of the last.
    for _ in range(8):
        at = (int.from_bytes(os.urandom(4), "big") % (len(body) // 77)) * 77
        body[at:at + 76] = base64.b64encode(os.urandom(57))
    if commit == 40:
        # From here on, this file holds the key (as a real leak stays until removed).
        body[77 * 1000:77 * 1000 + 76] = b"aws_access_key_id = %s" % key.encode().ljust(56)
    data = bytes(body)
    out.write(b"commit refs/heads/main\n")
    out.write(b"committer bench <bench@example.com> %d +0000\n" % (1700000000 + commit))
    msg = b"version %d of file %d\n" % (commit, f)
    out.write(b"data %d\n%s" % (len(msg), msg))
    out.write(b"M 100644 inline file%02d.txt\n" % f)
    out.write(b"data %d\n" % len(data))
    out.write(data)
    out.write(b"\n")
    written += len(data)
    commit += 1
PY
  mv "$REPO.tmp" "$REPO"
fi
pack_mib=$(du -m "$REPO"/objects/pack/*.pack | awk '{s += $1} END {print s}')
commits=$(git -C "$REPO" rev-list --all --count)
WORK=$(mktemp -d "$BENCH_DIR/large.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# "seconds peak_rss_mib" of one run; exit statuses 0 and 1 (findings) are success. The
# peak is the command's own (VmHWM, read while it runs), not its children's: git maps
# whole packs into memory, and the clean's bundle step runs git pack-objects.
timed() {
  local rc=0 started
  started=$(date +%s.%N)
  python3 - "$WORK/peak" "$@" <<'PY' >"$WORK/out" 2>"$WORK/err" || rc=$?
import subprocess, sys, time
out, command = sys.argv[1], sys.argv[2:]
child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sys.stderr)
peak = 0
while child.poll() is None:
    try:
        with open(f"/proc/{child.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.02)
open(out, "w").write(str(peak // 1024))
sys.exit(child.returncode)
PY
  if [ "$rc" -gt 1 ]; then
    log "failed ($rc): $*"
    tail -5 "$WORK/err" >&2
    exit 2
  fi
  echo "$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}') $(cat "$WORK/peak")"
}

log "read floor"
git -C "$REPO" cat-file --batch-all-objects --unordered --batch-check >/dev/null # warm the cache
read -r floor floor_rss < <(timed git -C "$REPO" cat-file --batch-all-objects --unordered --batch)
log "deployguard scan"
read -r scan scan_rss < <(timed "$DG" scan "$REPO" --no-progress --format json -o "$WORK/scan.json")
found=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(sum(s["rule_id"].startswith("aws") for s in d["secrets"]), len(d["secrets"]))' "$WORK/scan.json")
log "deployguard clean"
printf 'literal:%s\n' "$KEY" >"$WORK/expressions"
mkdir "$WORK/clean"
read -r clean clean_rss < <(timed "$DG" clean "$REPO" --replace-text "$WORK/expressions" -o "$WORK/clean/out.bundle" --no-progress)
bundle_mib=$(du -m "$WORK/clean/out.bundle" | cut -f1)
left=$(git clone -q --mirror "$WORK/clean/out.bundle" "$WORK/clean/check.git" 2>/dev/null &&
  git -C "$WORK/clean/check.git" cat-file --batch-all-objects --batch | grep -a -c -F "$KEY" || true)

cat <<EOF
## $(date +%F) — a large pack ($pack_mib MiB): memory
Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(git --version).
Repository: \`bench/large_pack.sh\` (16 files of random base64, $commits versions, one planted AWS key), one pack of $pack_mib MiB.

| measurement | wall s | peak RSS MiB |
|---|---:|---:|
| read floor: \`git cat-file --batch-all-objects --unordered --batch\` (maps the pack) | $floor | $floor_rss |
| deployguard scan (whole history) | $scan | $scan_rss |
| deployguard clean (the planted key) → bundle of $bundle_mib MiB | $clean | $clean_rss |

Scan: AWS secrets found, all secrets: $found. Clean: objects holding the key afterwards: $left.
EOF
}
