#!/usr/bin/env python3
"""Self (exclusive) cost per function from a callgrind dump: `cg_self.py FILE [TOP] [EVENT]`
(EVENT: one of the dump's `events:`, e.g. I1mr for instruction-cache misses of a
`--cache-sim` run; default Ir).
callgrind_annotate 3.19 mis-attributes self cost in `callgrind_control -d` part dumps."""
import re
import sys
from collections import defaultdict

REF = re.compile(r"^\((\d+)\)(?: (.*))?$")


class Names:
    """Callgrind's name compression: `(12) name` defines id 12, a later `(12)` refers to it;
    functions and objects are numbered apart."""

    def __init__(self):
        self.names = {"fn": {}, "ob": {}}

    def resolve(self, kind, v):
        m = REF.match(v)
        if not m:
            return v
        if m.group(2) is not None:
            self.names[kind][m.group(1)] = m.group(2)
            return m.group(2)
        return self.names[kind].get(m.group(1), v)


def self_costs(path, event=None):
    resolve = Names().resolve
    cost = defaultdict(int)
    total = 0
    fn = ob = None
    skip_next = False

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:  # the inclusive cost of a call, not self cost
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) > col:
                    v = int(parts[col])
                    cost[(fn, ob)] += v
                    total += v
                continue
            if line.startswith("events:"):
                names_ = line.split()[1:]
                col = 1 + (names_.index(event) if event else 0)
                continue
            key, _, val = line.partition("=")
            if key == "fn":
                fn = resolve("fn", val)
            elif key == "ob":
                ob = resolve("ob", val)
            elif key in ("cfn", "cfi", "cfl"):
                if key == "cfn":
                    resolve("fn", val)
            elif key == "cob":
                resolve("ob", val)
            elif key == "calls":
                skip_next = True
    return total, cost


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    event = sys.argv[3] if len(sys.argv) > 3 else None
    total, cost = self_costs(path, event)
    print(f"{total:,} {event or 'Ir'} total (self cost per function, top {top})")
    for (fn, ob), v in sorted(cost.items(), key=lambda kv: -kv[1])[:top]:
        obn = (ob or "?").rsplit("/", 1)[-1]
        print(f"{v:>14,} {100 * v / total:5.1f}%  {fn}  [{obn}]")


if __name__ == "__main__":
    main()


def callers(path, target):
    """Inclusive cost of calls to functions whose name contains `target`, by caller."""
    names = Names()
    out = defaultdict(int)
    fn = cfn = None
    take = False

    def resolve(v):
        return names.resolve("fn", v)

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                fn = resolve(line[3:])
            elif line.startswith("cfn="):
                cfn = resolve(line[4:])
            elif line.startswith("calls="):
                take = True
            elif take and line and (line[0].isdigit() or line[0] in "+-*"):
                take = False
                if target in (cfn or ""):
                    out[fn] += int(line.split()[1])
    return out
