"""Benchmark the FGW barycenter of the OTM mixer against POT and a plain paper loop.

Side by side in one run, on the same inputs (synthetic clustered codes, rows L2-normalised,
each modality independently permuted), the same alpha and number of outer iterations:

* ``ours``: ``otm_fed.mixer.fgw_barycenter`` (warm-started CG, sparse line search, best iterate);
* ``pot_fgw_barycenters``: POT's ``ot.gromov.fgw_barycenters`` with features and structure free,
  N_B = N, started from the first modality (codes and distances), as ours is;
* ``paper_loop``: Algorithm 2 written plainly with POT's FGW solver, cold starts, same start.

Every solution is scored by one shared function, ``barycenter_objective`` (sum_m FGW(Z_B, Z_m),
plans re-solved with A = distances of Z_B). Prints a table; ``--json`` writes rows
``{"n", "m", "method", "median_seconds", "objective", "init_objective", "seconds"}``.

    python benchmarks/mixer.py [--sizes 100,400,1000] [--modalities 2,3,6,12] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import ot

from otm_fed.mixer import barycenter_objective, fgw_barycenter, pairwise_distances, squared_distances

ALPHA = 0.5
OUTER_ITERATIONS = 5
LATENT_DIM = 64
N_CLUSTERS = 8


def clustered_codes(n: int, n_modalities: int, dim: int = LATENT_DIM, seed: int = 0) -> list[np.ndarray]:
    """Codes of n samples in C clusters, seen by each modality through its own rotation and
    noise, rows L2-normalised, each modality's rows independently permuted."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % N_CLUSTERS
    centres = rng.standard_normal((N_CLUSTERS, dim))
    codes = []
    for _ in range(n_modalities):
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        z = (centres[labels] + 0.5 * rng.standard_normal((n, dim))) @ rotation
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        codes.append(z[rng.permutation(n)])
    return codes


def ours(codes: list[np.ndarray]) -> np.ndarray:
    return fgw_barycenter(codes, ALPHA, max_outer=OUTER_ITERATIONS).barycenter


def pot_fgw_barycenters(codes: list[np.ndarray]) -> np.ndarray:
    structures = [pairwise_distances(z) for z in codes]
    features, _ = ot.gromov.fgw_barycenters(
        codes[0].shape[0], codes, structures, alpha=1.0 - ALPHA, max_iter=OUTER_ITERATIONS,
        init_X=codes[0], init_C=structures[0], random_state=0)
    return features


def paper_loop(codes: list[np.ndarray]) -> np.ndarray:
    z_b = codes[0].copy()
    structures = [pairwise_distances(z) for z in codes]
    for _ in range(OUTER_ITERATIONS):
        structure_b = pairwise_distances(z_b)
        plans = [ot.gromov.fused_gromov_wasserstein(squared_distances(z_b, z), structure_b, a,
                                                    alpha=1.0 - ALPHA)
                 for z, a in zip(codes, structures)]
        z_b = sum(plan @ z for plan, z in zip(plans, codes)) * z_b.shape[0] / len(codes)
    return z_b


METHODS: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "ours": ours, "pot_fgw_barycenters": pot_fgw_barycenters, "paper_loop": paper_loop}


def run(sizes: list[int], modalities: list[int], repeats: int) -> list[dict]:
    rows = []
    for n in sizes:
        for m in modalities:
            codes = clustered_codes(n, m)
            init_objective = barycenter_objective(codes[0], codes, ALPHA)
            seconds: dict[str, list[float]] = {name: [] for name in METHODS}
            solutions: dict[str, np.ndarray] = {}
            for _ in range(repeats):
                for name, method in METHODS.items():  # interleaved, so load hits all alike
                    start = time.perf_counter()
                    solutions[name] = method(codes)
                    seconds[name].append(time.perf_counter() - start)
            for name in METHODS:
                rows.append({"n": n, "m": m, "method": name,
                             "median_seconds": statistics.median(seconds[name]),
                             "objective": barycenter_objective(solutions[name], codes, ALPHA),
                             "init_objective": init_objective, "seconds": seconds[name]})
            print_rows(rows[-len(METHODS):])
    return rows


def print_rows(rows: list[dict]) -> None:
    by_method = {row["method"]: row for row in rows}
    for row in rows:
        ratio_pot = by_method["pot_fgw_barycenters"]["median_seconds"] / row["median_seconds"]
        ratio_loop = by_method["paper_loop"]["median_seconds"] / row["median_seconds"]
        print(f"| {row['n']:5d} | {row['m']:3d} | {row['method']:20s} | {row['median_seconds']:8.3f} "
              f"| {ratio_pot:6.2f}x | {ratio_loop:6.2f}x | {row['objective']:8.4f} "
              f"| {row['init_objective']:8.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,400,1000")
    parser.add_argument("--modalities", default="2,3,6,12")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print("|     N |   M | method               |  median s | POT/this | loop/this | objective | Z_B=Z_1 obj |")
    print("|------:|----:|----------------------|----------:|---------:|----------:|----------:|------------:|")
    rows = run([int(s) for s in args.sizes.split(",")],
               [int(s) for s in args.modalities.split(",")], args.repeats)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
