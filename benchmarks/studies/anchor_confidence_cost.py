"""The cost of the anchors' jackknife, side by side on the same anchors: refitting every left-out
set against its own 100 random pairings; ``anchor_confidence`` (left-out sets from the full set's
moments, one set of pairings shared by all) with the same 100 pairings; and ``anchor_confidence``
as the gate runs it, with ``null_pairings(K)``.

    python benchmarks/studies/anchor_confidence_cost.py [--anchors 10,50,100,400,800] [--json PATH]

Per K: anchors of width 16 (the default latent width), one modality a noisy rotated copy of the
other (signal share 0.5); each method's median seconds over ``--repeats`` calls, and its
statistic's mean and spread over ``--draws`` fresh draws of the random pairings (the three
estimate one quantity, so they must agree within that spread).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]

from otm_fed.frames import ANCHOR_PERMUTATIONS, anchor_confidence, anchor_fit_gain, null_pairings  # noqa: E402
from otm_fed.results import write_json  # noqa: E402

WIDTH = 16


def refitted(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    """The jackknife minimum computed directly: every left-out set refitted, each against its
    own ``ANCHOR_PERMUTATIONS`` random pairings (quadratic in K)."""
    return min(anchor_fit_gain(np.delete(x, i, 0), np.delete(y, i, 0), rng, ANCHOR_PERMUTATIONS)
               for i in range(len(x)))


def moments(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    return anchor_confidence(x, y, rng, ANCHOR_PERMUTATIONS)


def default(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    return anchor_confidence(x, y, rng)


METHODS = {"refitted": refitted, "moments": moments, "default": default}


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
    print("| K | default pairings | refitted s | moments s | default s | refitted / default | "
          "refitted statistic | moments statistic | default statistic |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in (int(value) for value in args.anchors.split(",")):
        x, y = anchors(k, seed=k)
        row: dict[str, float] = {"anchors": k, "default_pairings": null_pairings(k)}
        for name, method in METHODS.items():
            row[f"{name}_seconds"] = timed(method, x, y, args.repeats)
            values = [method(x, y, np.random.default_rng(100 + draw)) for draw in range(args.draws)]
            row[f"{name}_statistic"], row[f"{name}_spread"] = float(np.mean(values)), float(np.std(values))
        rows.append(row)
        print(f"| {k} | {row['default_pairings']} | " + " | ".join(f"{row[f'{name}_seconds']:.3f}" for name in METHODS)
              + f" | {row['refitted_seconds'] / row['default_seconds']:.1f} | "
              + " | ".join(f"{row[f'{name}_statistic']:.4f} ± {row[f'{name}_spread']:.4f}" for name in METHODS) + " |",
              flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
