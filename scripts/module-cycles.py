#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a circle.

For every library and binary crate of the workspace, each file under `src/` belongs to
a top-level module (its first path component, or `lib`/`main` for the crate root); a
`crate::NAME` path in it (also inside `use crate::{…}`) is an edge to module NAME. The
strongly connected components of that graph with more than one module are the circles.

    scripts/module-cycles.py                     # every crate of the workspace
    scripts/module-cycles.py shared              # some crates
    scripts/module-cycles.py --root DIR shared   # another checkout
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["engine", "shared", "api", "worker", "beat", "cli", "testkit"]


def module_of(src: Path, path: Path) -> str:
    rel = path.relative_to(src)
    return rel.parts[0].removesuffix(".rs") if len(rel.parts) > 1 else rel.stem


def references(text: str):
    """Top-level module names named after `crate::`, braces included."""
    # Comments say nothing about imports.
    text = re.sub(r"//[^\n]*", "", text)
    for m in re.finditer(r"\bcrate::(\{|[A-Za-z_][A-Za-z0-9_]*)", text):
        if m.group(1) != "{":
            yield m.group(1)
            continue
        depth, i, item = 1, m.end(), ""
        while i < len(text) and depth:
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            if depth == 1 and c in ",}" or depth == 0:
                name = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", item)
                if name:
                    yield name.group(1)
                item = ""
            elif depth == 1:
                item += c
            i += 1


def graph(crate: str):
    src = ROOT / crate / "src"
    modules = {module_of(src, p) for p in src.rglob("*.rs")}
    edges = {m: set() for m in modules}
    for path in src.rglob("*.rs"):
        here = module_of(src, path)
        for name in references(path.read_text()):
            if name in modules and name != here and name not in ("lib", "main"):
                edges[here].add(name)
    return edges


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    global ROOT
    args = sys.argv[1:]
    if args[:1] == ["--root"]:
        ROOT, args = Path(args[1]).resolve(), args[2:]
    failed = False
    for crate in args or [c for c in CRATES if (ROOT / c / "src").is_dir()]:
        edges = graph(crate)
        found = cycles(edges)
        for component in found:
            failed = True
            print(f"{crate}: modules import each other in a circle: {' ↔ '.join(component)}")
        if not found:
            count = sum(len(v) for v in edges.values())
            print(f"{crate}: {len(edges)} modules, {count} edges, no circle")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
