#!/usr/bin/env python3
"""Scores secret scanners on DeployGuard's labelled detection corpus.

Two parts, each scanned by every tool as one directory of files:

* rules: every shipped rule's examples (one file each, a positive) and negatives (one
  file each, a near miss), grouped by the rule's category. A positive counts as found
  when the tool reports anything in its file; a negative counts as a false alarm when it
  does. DeployGuard's own rules are tested to report their examples, so its recall here
  is a regression check; the other tools' is how much of our providers' formats they
  know.
* realistic: hand-made files as people commit them (bench/detection/realistic), with
  labels.json naming every planted credential. A credential counts as found when a
  finding in its file is it, holds it or is held by it (a password inside a URL, an
  `auth` string whose decoding holds it). Negative files must produce nothing.

Usage: score.py CORPUS_WORK_DIR TOOL=COMMAND...   (TOOL is deployguard or gitleaks)
Prints a Markdown section on stdout.
"""

import json
import os
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE.parent.parent / "engine" / "rules"


def build_rule_corpus(work: Path) -> dict:
    """Writes rules/{positive,negative}/CATEGORY/RULE-N.txt; returns {path: category}."""
    categories = {}
    for rule_file in sorted(RULES.glob("*.toml")):
        data = tomllib.loads(rule_file.read_text())
        category = data["category"]
        for rule in data.get("rules", []):
            for kind, texts in (("positive", rule.get("examples", [])),
                                ("negative", rule.get("negatives", []))):
                for n, text in enumerate(texts):
                    rel = f"rules/{kind}/{category}/{rule['id']}-{n}.txt"
                    path = work / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text + "\n")
                    categories[rel] = category
    return categories


def findings(tool: str, command: str, root: Path, out: Path) -> dict:
    """{relative file: [secret values]} as the tool reports them for root."""
    found = defaultdict(list)
    if tool == "deployguard":
        run = subprocess.run(
            [command, "scan", "--no-git", str(root), "--format", "json",
             "--show-secrets", "--no-progress", "-o", str(out)],
            capture_output=True, text=True)
        if run.returncode not in (0, 1):
            sys.exit(f"deployguard failed ({run.returncode}): {run.stderr.strip()}")
        report = json.loads(out.read_text())
        for secret in report["secrets"]:
            value = secret.get("value", "")
            for occurrence in secret["occurrences"]:
                path = occurrence["path"]
                found[os.path.relpath(root / path, root) if not path.startswith("/")
                      else os.path.relpath(path, root)].append(value)
    elif tool == "gitleaks":
        run = subprocess.run(
            [command, "dir", str(root), "--no-banner", "--report-format", "json",
             "--report-path", str(out), "--exit-code", "0", "--log-level", "error"],
            capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"gitleaks failed ({run.returncode}): {run.stderr.strip()}")
        for finding in json.loads(out.read_text() or "[]"):
            found[os.path.relpath(finding["File"], root)].append(finding.get("Secret", ""))
    else:
        sys.exit(f"unknown tool {tool}")
    return found


def matches(label: str, values: list) -> bool:
    return any(v and (label == v or label in v or (len(v) >= 6 and v in label))
               for v in values)


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    work = Path(sys.argv[1])
    tools = [arg.split("=", 1) for arg in sys.argv[2:]]
    categories = build_rule_corpus(work)
    realistic = HERE / "realistic"
    labels = json.loads((realistic / "labels.json").read_text())

    rule_rows = defaultdict(dict)      # category -> tool -> (tp, p, fp, n)
    real_rows = {}                     # tool -> (found, labelled, noisy files, negative files, missed)
    for tool, command in tools:
        got = findings(tool, command, work / "rules", work / f"{tool}-rules.json")
        counts = defaultdict(lambda: [0, 0, 0, 0])
        for rel, category in categories.items():
            key = os.path.relpath(work / rel, work / "rules")
            hit = bool(got.get(key))
            c = counts[category]
            if "/positive/" in f"/{rel}":
                c[0] += hit
                c[1] += 1
            else:
                c[2] += hit
                c[3] += 1
        for category, c in counts.items():
            rule_rows[category][tool] = tuple(c)

        got = findings(tool, command, realistic, work / f"{tool}-realistic.json")
        found = labelled = 0
        missed = []
        for rel, values in labels.items():
            for n, label in enumerate(values):
                labelled += 1
                if matches(label, got.get(rel, [])):
                    found += 1
                else:
                    missed.append(f"{rel} #{n + 1}")
        negatives = sorted(p.relative_to(realistic).as_posix()
                           for p in (realistic / "negative").rglob("*") if p.is_file())
        noisy = [n for n in negatives if got.get(n)]
        real_rows[tool] = (found, labelled, noisy, len(negatives), missed)

    names = [tool for tool, _ in tools]
    print("### Rule corpus (each rule's examples and near-miss negatives, one file each)\n")
    print("| category | " + " | ".join(f"{t} recall | {t} near misses flagged" for t in names) + " |")
    print("|---|" + "---:|---:|" * len(names))
    totals = {t: [0, 0, 0, 0] for t in names}
    for category in sorted(rule_rows):
        cells = []
        for t in names:
            tp, p, fp, n = rule_rows[category][t]
            for i, x in enumerate((tp, p, fp, n)):
                totals[t][i] += x
            cells.append(f"{tp}/{p} ({tp / p:.0%})" if p else "–")
            cells.append(f"{fp}/{n} ({fp / n:.0%})" if n else "–")
        print(f"| {category} | " + " | ".join(cells) + " |")
    cells = []
    for t in names:
        tp, p, fp, n = totals[t]
        cells += [f"**{tp}/{p} ({tp / p:.1%})**", f"**{fp}/{n} ({fp / n:.1%})**"]
    print("| all | " + " | ".join(cells) + " |\n")

    print("### Realistic files (bench/detection/realistic)\n")
    print("| tool | credentials found | negative files with a finding |")
    print("|---|---:|---:|")
    for t in names:
        found, labelled, noisy, negatives, _ = real_rows[t]
        print(f"| {t} | {found}/{labelled} ({found / labelled:.0%}) | {len(noisy)}/{negatives} |")
    for t in names:
        found, labelled, noisy, negatives, missed = real_rows[t]
        if missed:
            print(f"\n{t} missed: " + "; ".join(missed))
        if noisy:
            print(f"\n{t} flagged negatives: " + ", ".join(noisy))


if __name__ == "__main__":
    main()
