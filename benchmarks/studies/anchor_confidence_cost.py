"""The cost of the anchors' jackknife: ``anchor_confidence`` (left-out sets from the full set's
moments, one set of random pairings shared by all of them) against refitting every left-out set
against its own random pairings, side by side on the same anchors.

    python benchmarks/studies/anchor_confidence_cost.py [--anchors 10,50,100,400,800] [--json PATH]

Per K: anchors of width 16 (the default latent width), one modality a noisy rotated copy of the
other (signal share 0.5); each method's median seconds over ``--repeats`` calls, their ratio, and
each method's statistic averaged over ``--draws`` fresh draws of the random pairings (the two
estimate one quantity, so they must agree within the spread of the draws).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]

from otm_fed.frames import ANCHOR_PERMUTATIONS, anchor_confidence, anchor_fit_gain  # noqa: E402
from otm_fed.results import write_json  # noqa: E402

WIDTH = 16


def refitted_jackknife(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    """The jackknife minimum computed directly: every left-out set refitted, each against its
    own ``ANCHOR_PERMUTATIONS`` random pairings (quadratic in K)."""
    return min(anchor_fit_gain(np.delete(x, i, 0), np.delete(y, i, 0), rng, ANCHOR_PERMUTATIONS)
               for i in range(len(x)))


def anchors(k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k, WIDTH))
    rotation = np.linalg.qr(rng.normal(size=(WIDTH, WIDTH)))[0]
    return x, x @ rotation + rng.normal(size=(k, WIDTH))


def timed(method, x: np.ndarray, y: np.ndarray, repeats: int) -> float:
    seconds = []
    for repeat in range(repeats):
        start = time.perf_counter()
        method(x, y, np.random.default_rng(repeat))
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchors", default="10,50,100,400,800")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    rows = []
    print("| K | refitted s | moments s | refitted / moments | refitted statistic | moments statistic |")
    print("|---|---|---|---|---|---|")
    for k in (int(value) for value in args.anchors.split(",")):
        x, y = anchors(k, seed=k)
        row = {"anchors": k, "refitted_seconds": timed(refitted_jackknife, x, y, args.repeats),
               "moments_seconds": timed(anchor_confidence, x, y, args.repeats)}
        for name, method in (("refitted", refitted_jackknife), ("moments", anchor_confidence)):
            values = [method(x, y, np.random.default_rng(100 + draw)) for draw in range(args.draws)]
            row[f"{name}_statistic"], row[f"{name}_spread"] = float(np.mean(values)), float(np.std(values))
        rows.append(row)
        print(f"| {k} | {row['refitted_seconds']:.3f} | {row['moments_seconds']:.3f} | "
              f"{row['refitted_seconds'] / row['moments_seconds']:.1f} | {row['refitted_statistic']:.4f} ± "
              f"{row['refitted_spread']:.4f} | {row['moments_statistic']:.4f} ± {row['moments_spread']:.4f} |", flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
