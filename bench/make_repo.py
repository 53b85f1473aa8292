#!/usr/bin/env python3
"""Builds a large synthetic git repository for scanner benchmarks.

Streams a `git fast-import` script: a main line of commits that edit source-like
files, side branches forked from old commits, files added then deleted, and secrets
planted in old commits on side branches (their values are printed at the end so a
benchmark can check they were found).

    bench/make_repo.py DEST [--commits 30000] [--files 2000] [--file-kib 48] [--seed 1]
"""
import argparse
import os
import random
import string
import subprocess
import sys

WORDS = (
    "config value result request response handler client server token cache index "
    "user account session buffer stream parser module import return function class "
    "const let var self this async await error retry timeout limit offset count items "
    "password secret key auth api path file data input output build deploy release"
).split()


def line(rng):
    kind = rng.randrange(6)
    a, b, c = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
    if kind == 0:
        return f"    let {a}_{b} = {c}.get(\"{b}\")?;"
    if kind == 1:
        return f"def {a}_{b}(self, {c}):"
    if kind == 2:
        return f"{a.upper()}_{b.upper()}={rng.randrange(10**6)}"
    if kind == 3:
        return f"  {a}: {b}-{c}-{rng.randrange(1000)}"
    if kind == 4:
        return f"// {a} {b} {c} {rng.choice(WORDS)} {rng.choice(WORDS)}"
    return f"    return {a}({b}, {c}) + {rng.randrange(100)}"


def secret(rng, n):
    alnum = string.ascii_letters + string.digits
    body = lambda k: "".join(rng.choice(alnum) for _ in range(k))
    kinds = [
        lambda: ("github-personal-access-token", "ghp_" + body(36)),
        lambda: ("aws-access-key-id", "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))),
        lambda: ("stripe-live-secret-key", "sk_live_" + body(24)),
        lambda: ("gitlab-personal-access-token", "glpat-" + body(20)),
    ]
    return kinds[n % len(kinds)]()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dest")
    parser.add_argument("--commits", type=int, default=30000)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kib", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    subprocess.run(["git", "init", "-q", "--bare", args.dest], check=True)
    importer = subprocess.Popen(
        ["git", "fast-import", "--quiet", "--done"], cwd=args.dest, stdin=subprocess.PIPE
    )
    out = importer.stdin
    lines_per_file = max(1, args.file_kib * 1024 // 36)
    corpus = [line(rng) for _ in range(200_000)]
    files = {}
    for i in range(args.files):
        start = rng.randrange(len(corpus) - lines_per_file)
        files[f"src/mod{i % 50}/file{i}.txt"] = corpus[start:start + lines_per_file]
    paths = list(files)
    when = 1_500_000_000
    mark = 0
    planted = []

    def emit(ref, message, changes, parent=None, deletes=()):
        nonlocal when, mark
        mark += 1
        when += 60
        body = message.encode()
        out.write(f"commit {ref}\nmark :{mark}\n".encode())
        out.write(f"committer Bench <bench@example.test> {when} +0000\n".encode())
        out.write(f"data {len(body)}\n".encode() + body + b"\n")
        if parent:
            out.write(f"from {parent}\n".encode())
        for path in deletes:
            out.write(f"D {path}\n".encode())
        for path, text in changes:
            data = text.encode()
            out.write(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")
        return mark

    # First commit: every file.
    emit("refs/heads/main", "initial import", [(p, "\n".join(files[p]) + "\n") for p in paths])
    main_marks = [mark]
    for n in range(1, args.commits):
        changes = []
        for _ in range(2):
            path = rng.choice(paths)
            content = files[path]
            at = rng.randrange(len(content))
            content[at:at + 3] = [line(rng) for _ in range(3)]
            changes.append((path, "\n".join(content) + "\n"))
        deletes = ()
        if n % 997 == 0:
            # A temporary file, deleted a few commits later, holds a secret.
            rule, value = secret(rng, n)
            planted.append((rule, value))
            changes.append((f"tmp/debug-{n}.env", f"TOKEN={value}\n"))
        if n % 997 == 5:
            deletes = (f"tmp/debug-{n - 5}.env",)
        emit("refs/heads/main", f"change {n}", changes, deletes=deletes)
        main_marks.append(mark)
        if n % 1500 == 0:
            # A side branch forked from an old commit, carrying a secret.
            fork = main_marks[rng.randrange(len(main_marks) // 2 + 1)]
            rule, value = secret(rng, n + 1)
            planted.append((rule, value))
            emit(f"refs/heads/side-{n}", f"side work {n}", [(f"side/{n}/settings.env", f"KEY={value}\n")], parent=f":{fork}")
    out.write(b"done\n")
    out.close()
    if importer.wait() != 0:
        sys.exit("git fast-import failed")
    subprocess.run(["git", "symbolic-ref", "HEAD", "refs/heads/main"], cwd=args.dest, check=True)
    # Pack the way a hosted repository is packed (deltas recomputed), so that reading it
    # costs what reading a real repository costs.
    subprocess.run(["git", "repack", "-a", "-d", "-f", "-q"], cwd=args.dest, check=True)
    with open(os.path.join(args.dest, "planted-secrets.txt"), "w") as f:
        for rule, value in planted:
            f.write(f"{rule} {value}\n")
    print(f"{args.dest}: {args.commits} commits, {len(planted)} planted secrets")


if __name__ == "__main__":
    main()
