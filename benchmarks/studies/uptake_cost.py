"""What the guard (agent side) and the flow's reading (server side) cost a round, in time and memory.

    python benchmarks/studies/uptake_cost.py [--rows 128,256] [--widths 6,240,1878] [--repeats 5]

Per batch size N and input width D, on seeded Gaussian rows: the median seconds and the peak
memory (``tracemalloc``, which counts numpy's buffers) of one ``guard_weight`` call (k-NN
agreement of the agent's N x D input rows and its N x 16 target) and of one ``cluster_strength``
call (the silhouette of a seeded k-means of N x 16 codes; the server reads two per mixed
modality a round).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from otm_fed.uptake import cluster_strength, guard_weight  # noqa: E402

LATENT = 16
K = 10  # neighbours: the largest k the default rule (N / 2C, between 1 and 10) gives
CLUSTERS = 6


def measure(call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median seconds, peak MB) of ``repeats`` calls, after one that pays the imports."""
    call()
    seconds = []
    tracemalloc.start()
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(seconds), peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="128,256")
    parser.add_argument("--widths", default="6,240,1878")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| N | D | guard_weight s | guard_weight peak MB | cluster_strength s | cluster_strength peak MB |")
    print("|---|---|---|---|---|---|")
    for n in (int(v) for v in args.rows.split(",")):
        codes = rng.normal(size=(n, LATENT))
        strength = measure(lambda: cluster_strength(codes, CLUSTERS, 0), args.repeats)
        for d in (int(v) for v in args.widths.split(",")):
            inputs = rng.normal(size=(n, d))
            guard = measure(lambda: guard_weight(inputs, codes, K), args.repeats)
            print(f"| {n} | {d} | {guard[0]:.4f} | {guard[1]:.1f} | {strength[0]:.4f} | {strength[1]:.1f} |")


if __name__ == "__main__":
    main()
