"""Paired differences between two sweep labels over the same samples: the mean over (family x length) cells of
the mean difference in points, with a 95% bootstrap interval that resamples samples within each cell.

    python results/cpu/speckv-quality/round2/paired.py RESULTS.jsonl A B [--lengths 2048 4096 8192]

A label is ``method`` (full) or ``method@budget``. Also prints the mean KV entries each kept.
"""

import argparse
import collections
import json
import random
import statistics


def load(path):
    rows = {}
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        label = r["method"] if r["budget"] is None else f"{r['method']}@{r['budget']}"
        rows[(label, r["task"], r["length"], r["seed"], r["sample"])] = r
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--lengths", type=int, nargs="*")
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    rows = load(args.path)
    cells = collections.defaultdict(list)  # (task, length) -> [(diff in points, kept a, kept b)]
    for (label, task, length, seed, sample), r in rows.items():
        if label != args.a or (args.lengths and length not in args.lengths):
            continue
        other = rows.get((args.b, task, length, seed, sample))
        if other is not None:
            cells[(task, length)].append((100 * (r["score"] - other["score"]), r["kept"], other["kept"]))
    if not cells:
        raise SystemExit("no paired samples")
    point = statistics.mean(statistics.mean(d for d, _, _ in v) for v in cells.values())
    rng = random.Random(0)
    boots = sorted(
        statistics.mean(statistics.mean(rng.choice(v)[0] for _ in v) for v in cells.values())
        for _ in range(args.rounds))
    n = sum(len(v) for v in cells.values())
    kept_a = statistics.mean(k for v in cells.values() for _, k, _ in v)
    kept_b = statistics.mean(k for v in cells.values() for _, _, k in v)
    lo, hi = boots[int(0.025 * args.rounds)], boots[int(0.975 * args.rounds) - 1]
    print(f"{args.a} - {args.b}: {point:+.1f} points (95% {lo:+.1f} .. {hi:+.1f}), n = {n} pairs in "
          f"{len(cells)} cells; kept {kept_a:.0f} vs {kept_b:.0f}")


if __name__ == "__main__":
    main()
