#!/usr/bin/env python3
"""Recall of sa-eval --map with 95 % intervals, from its --jsonl.

A mapping's queries are not independent: the base's ICL and a delta fail
or succeed by whole episodes.  The interval resamples episodes, not
queries (a percentile bootstrap over episodes, fixed seed), so a row of
few episodes says how little it knows.

  sa-eval --map --pool data/pools/dev --pairs 1,4,16 --episodes 8 \\
      --queries 128 --jsonl map.jsonl > /dev/null
  scripts/map-ci.py map.jsonl

Exit status as sa-eval's: 64 usage, 65 a file that is not sa-eval's
JSON Lines, 66 a file that cannot be read.
"""
import json
import random
import sys
from collections import defaultdict


def interval(eps, draws, rng):
    """eps: [(right, asked)] of each episode -> (recall, lo, hi) in %."""
    right = sum(r for r, _ in eps)
    asked = sum(n for _, n in eps)
    stats = []
    for _ in range(draws):
        s = [eps[rng.randrange(len(eps))] for _ in eps]
        stats.append(sum(r for r, _ in s) / sum(n for _, n in s))
    stats.sort()
    return (100 * right / asked, 100 * stats[int(0.025 * draws)],
            100 * stats[int(0.975 * draws) - 1])


def fail(status, msg):
    print("map-ci: " + msg, file=sys.stderr)
    sys.exit(status)


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        fail(64, "usage: scripts/map-ci.py FILE.jsonl (- for stdin)")
    name = sys.argv[1]
    cells = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    methods = []
    try:
        # bytes, so that a line that is not UTF-8 fails in json.loads,
        # where its number is known, not in the file's reading
        f = sys.stdin.buffer if name == "-" else open(name, "rb")
        for n, line in enumerate(f, 1):
            r = json.loads(line)
            if "pairs" not in r:
                continue
            if r["method"] not in methods:
                methods.append(r["method"])
            c = cells[(r["pairs"], r["method"])][r["episode"]]
            c[0] += bool(r["correct"])
            c[1] += 1
    except OSError as e:
        fail(66, f"{name}: {e.strerror}")
    except (ValueError, KeyError, TypeError, AttributeError):
        fail(65, f"{name}:{n}: not a record of sa-eval --map --jsonl")
    if not cells:
        fail(65, f"no --map records in {name}")
    rng = random.Random(1)
    print("| pairs | " + " | ".join(methods) + " |")
    print("|---:|" + "---:|" * len(methods))
    for pairs in sorted({p for p, _ in cells}):
        row = []
        for m in methods:
            eps = list(cells[(pairs, m)].values())
            if not eps:
                row.append("")
                continue
            rec, lo, hi = interval(eps, 2000, rng)
            row.append(f"{rec:.1f} ({lo:.1f}-{hi:.1f}, {len(eps)} ep.)")
        print(f"| {pairs} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
