#!/usr/bin/env python3
"""Code footprint from a callgrind dump made with `--dump-instr=yes` (harness `--dump-instr`):

    cg_lines.py DUMP BINARY [TOP] [REQUESTS]

Counts, per function of BINARY's object (the gatehouse binary, nginx, libc.so.6, ...; a copy
named `gatehouse.old` counts as `gatehouse`), the
instructions executed on at least every other request (REQUESTS: the requests the dump covers,
3000 in a quick run): the bytes of those instructions (sizes from `objdump -d`), the 64-byte
cache lines they lie on, and the density (bytes executed / bytes of those lines). The total is
the request path's hot code: what has to come through a 32 KiB L1 instruction cache (512 lines)
on every request. With `--cache-sim` the dump also has each function's L1i misses (I1mr)."""
import re
import subprocess
import sys
from collections import defaultdict

from cg_self import Names


def parse(path, obj):
    """{function: {address: (Ir, I1mr)}} for the functions of object `obj`."""
    resolve = Names().resolve

    events, fn, ob, skip, addr = [], None, None, False, 0
    cost = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("ob="):
                ob = resolve("ob", line[3:])
            elif line.startswith("fn="):
                fn = resolve("fn", line[3:])
            elif line.startswith(("cfn=", "cob=")):
                resolve("fn" if line[1] == "f" else "ob", line[4:])
            elif line.startswith("calls="):
                skip = True
            elif line and (line[0] in "+-*0123456789" or line.startswith("0x")):
                parts = line.split()
                a = parts[0]
                if a.startswith("0x"):
                    addr = int(a, 16)
                elif a[0] in "+-":
                    d = int(a[1:], 16) if a[1:].startswith("0x") else int(a[1:])
                    addr += d if a[0] == "+" else -d
                if skip:  # the inclusive cost of a call: not this function's own
                    skip = False
                    continue
                base = (ob or "").rsplit("/", 1)[-1]
                if not base or not (obj == base or obj.startswith(base + ".")):
                    continue
                vals = [int(v) for v in parts[2:]]
                c = cost[fn][addr]
                c[0] += vals[0] if vals else 0
                if "I1mr" in events and len(vals) > events.index("I1mr"):
                    c[1] += vals[events.index("I1mr")]
    return cost


def sizes(binary):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary],
                         capture_output=True, text=True, check=True).stdout
    addrs = [int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s", out, re.M)]
    return {a: b - a for a, b in zip(addrs, addrs[1:]) if 0 < b - a < 16}


def main():
    path, binary = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    requests = int(sys.argv[4]) if len(sys.argv) > 4 else 3000
    cost = parse(path, binary.rsplit("/", 1)[-1])
    size = sizes(binary)
    rows, all_lines, all_bytes, all_miss = [], set(), 0, 0
    for fn, per in cost.items():
        hot = [a for a, (ir, _) in per.items() if ir * 2 >= requests]
        if not hot:
            continue
        lines = {a >> 6 for a in hot}
        nbytes = sum(size.get(a, 4) for a in hot)
        miss = sum(m for _, m in per.values())
        all_lines |= lines
        all_bytes += nbytes
        all_miss += miss
        rows.append((len(lines), nbytes, miss, fn))
    n = len(all_lines)
    print(f"hot code (executed on at least every other request): {all_bytes / 1024:.1f} KiB executed "
          f"on {n:,} cache lines ({n * 64 / 1024:.1f} KiB), density {all_bytes / max(1, n * 64):.2f}"
          + (f"; L1i misses {all_miss / requests:,.0f} per request" if all_miss else ""))
    print(f"{'lines':>6} {'bytes':>6} {'density':>7} {'I1mr/req':>8}  function")
    for lines, nbytes, miss, fn in sorted(rows, reverse=True)[:top]:
        print(f"{lines:6} {nbytes:6} {nbytes / (lines * 64):7.2f} {miss / requests:8.1f}  {fn[:120]}")


if __name__ == "__main__":
    main()
