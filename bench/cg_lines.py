#!/usr/bin/env python3
"""Code footprint from a callgrind dump made with `--dump-instr=yes` (harness `--dump-instr`):
`cg_lines.py DUMP [TOP]`. For every function: distinct 64-byte code lines it executed,
its instructions (Ir) and, with `--cache-sim`, its L1i misses. The sum of lines is the
request path's hot code in cache lines: what has to fit in the 32 KiB L1i (512 lines)."""
import re
import sys
from collections import defaultdict


def parse(path):
    names = {"fn": {}, "ob": {}}
    ref = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def resolve(kind, v):
        m = ref.match(v)
        if not m:
            return v
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
            return m.group(2)
        return names[kind].get(m.group(1), v)

    events, fn, ob, skip = [], None, None, False
    lines = defaultdict(set)
    cost = defaultdict(lambda: defaultdict(int))
    addr = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("ob="):
                ob = resolve("ob", line[3:])
            elif line.startswith("fn="):
                fn = resolve("fn", line[3:]) + f"  [{(ob or '').rsplit('/', 1)[-1]}]"
            elif line.startswith(("cfn=", "cob=")):
                resolve("fn" if line[1] == "f" else "ob", line[4:])
            elif line.startswith("calls="):
                skip = True
            elif line and (line[0] in "+-*0123456789" or line.startswith("0x")):
                parts = line.split()
                a = parts[0]
                if a.startswith("0x"):
                    addr = int(a, 16)
                elif a[0] == "+":
                    addr += int(a[1:], 16) if a[1:].startswith("0x") else int(a[1:])
                elif a[0] == "-":
                    addr -= int(a[1:], 16) if a[1:].startswith("0x") else int(a[1:])
                if skip:  # inclusive cost of a call: not this function's own
                    skip = False
                    continue
                vals = [int(v) for v in parts[2:]]
                if vals and vals[0] > 0:
                    lines[fn].add(addr >> 6)
                for e, v in zip(events, vals):
                    cost[fn][e] += v
    return events, lines, cost


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    events, lines, cost = parse(path)
    all_lines = set().union(*lines.values())
    total_ir = sum(c.get("Ir", 0) for c in cost.values())
    print(f"{len(all_lines):,} distinct code lines executed ({len(all_lines) * 64 / 1024:.0f} KiB), "
          f"{total_ir:,} Ir")
    print(f"{'lines':>7} {'Ir':>12} {'I1mr':>10}  function")
    for fn in sorted(lines, key=lambda k: -len(lines[k]))[:top]:
        c = cost[fn]
        print(f"{len(lines[fn]):7,} {c.get('Ir', 0):12,} {c.get('I1mr', 0):10,}  {fn[:150]}")


if __name__ == "__main__":
    main()
