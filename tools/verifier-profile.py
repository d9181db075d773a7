#!/usr/bin/python3
"""Where the verifier spends its work: instructions processed per verified function and per
source line, from a verifier log at level 2 (every processed instruction is a line `N: (op) ...`),
as tools/verifier-log.c writes it (docs/DATAPLANE.md, "Verifier work").

usage: verifier-profile.py LOG [TOP]
"""
import collections
import re
import sys

insn = re.compile(r"^(\d+): \(")
path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
segments = []
per_line = collections.Counter()
per_insn = collections.Counter()
count = 0
first_src = None
src = None
stats = []
label = None
with open(path, errors="replace") as f:
    for l in f:
        l = l.rstrip("\n")
        if l.startswith("; "):
            src = l[2:].strip()
            if first_src is None:
                first_src = src
            continue
        m = insn.match(l)
        if m:
            count += 1
            per_line[src] += 1
            per_insn[int(m.group(1))] += 1
            continue
        # Newer kernels say "Validating NAME() func#N..." before a global function (the main
        # program comes first); all say "Func#N ('NAME') is safe ..." after one.
        if l.startswith("Validating ") or (l.startswith("Func#") and "is safe" in l):
            if count:
                segments.append((label or (l if l.startswith("Func#") else "main program"), count, first_src))
            count, first_src = 0, None
            label = l if l.startswith("Validating ") else None
        elif l.startswith(("processed ", "verification time", "stack depth", "@@")):
            stats.append(l)
if count:
    segments.append((label or "main program", count, first_src))
print("\n".join(stats))
print(f"per verified function (instructions processed, sum {sum(n for _, n, _ in segments)}):")
for name, n, first in segments:
    print(f"  {n:8d}  {name[:80]}  |  {(first or '')[:100]}")
print(f"busiest source lines (top {top}):")
for s, n in per_line.most_common(top):
    print(f"  {n:8d}  {(s or '?')[:160]}")
print("busiest instructions:")
for i, n in per_insn.most_common(15):
    print(f"  {n:8d}  insn {i}")
