#!/usr/bin/env python3
"""The release binary's link order for the request path (`gatehouse/hot-functions.txt`):

    hot_functions.py OUT REQUESTS DUMP [DUMP...]

Writes the mangled names of the gatehouse binary's functions that run on at least every other
request (self cost in callgrind dumps made with `--demangle=no`, each covering REQUESTS
requests), hottest first; the first dump's functions first (the plain proxy), then those only
the later ones add (the JWT / rate limit / access log chain). `gatehouse/build.rs` hands the
file to the linker (`--symbol-ordering-file`), which places those functions next to each other
at the start of `.text`: the request path's ~280 KiB of code then sits on ~70 pages instead of
~145 spread over 11 MiB (fewer iTLB and L2 misses; bench/RESULTS.md, round 10).

Normally run through the harness: `bench/run.sh --sections instructions --hot-functions`.
Names that no longer exist are ignored by the linker. Mangled names carry hashes that move
when a dependency or the compiler changes (and with renames or new inlining on the request
path): regenerate then; every harness summary says how many listed names the binary has."""
import subprocess
import sys

from cg_self import self_costs


def hot(dump, requests, obj="gatehouse"):
    """Functions of `obj` with self cost >= requests / 2, hottest first."""
    _, cost = self_costs(dump)
    rows = [(v, fn) for (fn, ob), v in cost.items()
            if ob and ob.rsplit("/", 1)[-1].split(".")[0] == obj and fn and v >= requests / 2]
    return [fn for _, fn in sorted(rows, reverse=True)]


def write(out, requests, dumps):
    names, seen = [], set()
    for d in dumps:
        for fn in hot(d, requests):
            if fn not in seen:
                seen.add(fn)
                names.append(fn)
    if not any(n.startswith("_ZN") for n in names):
        raise SystemExit("no mangled Rust names in the dumps: run callgrind with --demangle=no")
    with open(out, "w") as f:
        f.write("".join(n + "\n" for n in names))
    return len(names)


def matched(listing, binary):
    """{"listed", "found"}: how many names of the list the binary has (a list made before a
    dependency or compiler change names functions whose mangled hashes have since moved)."""
    try:
        names = [n for n in open(listing).read().split("\n") if n]
        out = subprocess.run(["nm", "--defined-only", str(binary)], capture_output=True, text=True,
                             timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    have = {line.rsplit(" ", 1)[-1] for line in out.splitlines()}
    return {"listed": len(names), "found": sum(n in have for n in names)}


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    n = write(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
    print(f"{sys.argv[1]}: {n} functions")


if __name__ == "__main__":
    main()
