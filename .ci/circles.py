#!/usr/bin/env python3
"""No import circles in src/: builds the file-level graph of every
`use crate::..` / `use super::..` and every `crate::a::b` / `super::x` path
(doc links included; `mod` declarations and a module's own children are not
edges; trailing `#[cfg(test)] mod tests` blocks are ignored) and prints each
strongly connected component of more than one file. Exit 1 if there is one.

Usage: .ci/circles.py [src]"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "src"
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".rs"):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            files[tuple(parts)] = p
def resolve(path):
    # longest prefix that is a file module
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return None
edges = {m: set() for m in files}
pat = re.compile(r"\b(crate|super)((?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))+)")
usegroup = re.compile(r"use\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)
for m, p in files.items():
    src = open(p).read()
    src = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", src, flags=re.S)  # ignore test modules at end
    is_mod_file = p.endswith(("mod.rs", "lib.rs", "main.rs"))
    here = list(m) if is_mod_file else list(m[:-1])
    def target(kind, segs):
        if kind == "crate":
            base = []
        else:
            base = list(here)
            base = base[:-1] if base else base
            # super:: relative to the module itself
            base = list(m)[:-1]
        for s in segs:
            if s == "super":
                base = base[:-1]
            else:
                base.append(s)
        return base
    refs = []
    for g in usegroup.finditer(src):
        segs = [s for s in g.group(2).split("::") if s]
        for item in re.split(r",", g.group(3)):
            item = item.strip().split("::")[0].strip("{} \n")
            if item and item != "self":
                refs.append(target(g.group(1), segs + [item]))
            elif item == "self":
                refs.append(target(g.group(1), segs))
    for g in pat.finditer(src):
        segs = [s for s in g.group(2).split("::") if s]
        refs.append(target(g.group(1), segs))
    for r in refs:
        t = resolve(r)
        if t is not None and t != m and not (len(t) < len(m) and m[:len(t)] == t and files[t].endswith(("mod.rs","lib.rs"))):
            edges[m].add(t)
# tarjan
index = {}; low = {}; stack = []; on = set(); out = []; i = [0]
sys.setrecursionlimit(10000)
def sc(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            sc(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: out.append(comp)
for v in edges:
    if v not in index: sc(v)
for c in out:
    print(len(c), sorted("::".join(x) for x in c))
print("circles:", len(out))
sys.exit(1 if out else 0)
