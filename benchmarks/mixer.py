"""Benchmark the FGW barycenter of the OTM mixer against POT and a plain paper loop.

Side by side in one run, on the same inputs (synthetic clustered codes, rows L2-normalised,
each modality independently permuted), the same alpha and number of outer iterations:

* ``ours``: ``otm_fed.mixer.fgw_barycenter`` (warm-started CG with warm-started exact
  assignments and incremental products, exact line search, best iterate);
* ``pot_fgw_barycenters``: POT's ``ot.gromov.fgw_barycenters`` with features and structure free,
  N_B = N, started from the first modality (codes and distances), as ours is;
* ``paper_loop``: Algorithm 2 written plainly with POT's FGW solver, cold starts, same start;
* ``align_warm``: a round of the default strategy (``align = procrustes``): every modality's frame
  map warm-started from the previous round's rotation (fitted on another batch of the same
  modalities, as the strategy does), then ``ours`` on the codes in the common frame;
* ``align_search``: round 1 (and every ``align-refresh`` rounds): the same with the GW starts.

Every solution is scored by one shared function, ``barycenter_objective`` (sum_m FGW(Z_B, Z_m),
plans re-solved with A = distances of Z_B), against the codes it mixed (the aligned ones for the
``align_*`` rows, which are therefore not comparable with the others' objectives). Prints a table and the growth exponents of ``ours``
(log-log least-squares slopes of its median time against N at each M, and against M at each
N); ``--json`` writes rows
``{"n", "m", "method", "median_seconds", "objective", "init_objective", "seconds", "repeats"}``.

``--max-seconds-per-cell S`` bounds the baselines (``ours`` always runs every repeat): within a
cell, a baseline starts another repeat only while its runs so far plus one more (as long as
its slowest) fit in S seconds, so it runs at least once and ``repeats`` may be below
``--repeats``; and it is skipped outright (printed "skipped", no JSON row) where one run,
predicted from its median at the previous M for the same N scaled linearly in M, exceeds S.
Without the option every method runs every repeat in every cell.

    python benchmarks/mixer.py [--sizes 100,400,1000] [--modalities 2,3,6,12] [--repeats 3]
                               [--max-seconds-per-cell S] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import ot

from otm_fed.config import DEFAULTS
from otm_fed.frames import align_frames
from otm_fed.mixer import barycenter_objective, fgw_barycenter
from otm_fed.transport import pairwise_distances, squared_distances
from otm_fed.results import write_json

ALPHA = 0.5
OUTER_ITERATIONS = 5
LATENT_DIM = 64
N_CLUSTERS = 8


def clustered_codes(n: int, n_modalities: int, dim: int = LATENT_DIM, seed: int = 0,
                    batch: int = 0) -> list[np.ndarray]:
    """Codes of n samples in C clusters, seen by each modality through its own rotation and
    noise, rows L2-normalised, each modality's rows independently permuted. Centres and rotations
    depend on ``seed`` only; noise and order also on ``batch`` (another round's batch)."""
    rng = np.random.default_rng(seed)
    noise = np.random.default_rng([seed, batch])
    labels = np.arange(n) % N_CLUSTERS
    centres = rng.standard_normal((N_CLUSTERS, dim))
    codes = []
    for _ in range(n_modalities):
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        z = (centres[labels] + 0.5 * noise.standard_normal((n, dim))) @ rotation
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        codes.append(z[noise.permutation(n)])
    return codes


def ours(codes: list[np.ndarray]) -> np.ndarray:
    return fgw_barycenter(codes, ALPHA, max_outer=OUTER_ITERATIONS).barycenter


def common_frame(codes: list[np.ndarray], rotations: dict[int, np.ndarray], search: bool) -> list[np.ndarray]:
    """The codes in the common frame, as the strategy aligns them (``otm_fed.frames``)."""
    alignment = align_frames(dict(enumerate(codes)), rotations, DEFAULTS["align-starts"],
                             np.random.default_rng(0), search)
    return [alignment.frames[m].to_common(z) for m, z in enumerate(codes)]


def previous_rotations(codes: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Last round's rotations: fitted (with the GW starts) on another batch of the same modalities."""
    n, m = codes[0].shape[0], len(codes)
    earlier = clustered_codes(n, m, codes[0].shape[1], batch=1)
    alignment = align_frames(dict(enumerate(earlier)), {}, DEFAULTS["align-starts"], np.random.default_rng(0))
    return {modality: frame.rotation for modality, frame in alignment.frames.items()}


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
    "ours": ours, "pot_fgw_barycenters": pot_fgw_barycenters, "paper_loop": paper_loop,
    "align_warm": ours, "align_search": ours}
ALIGNED = {"align_warm": False, "align_search": True}  # method -> search (GW starts) or warm start


def predicted_seconds(previous: dict[str, tuple[int, float]], name: str, m: int) -> float:
    """One run of ``name`` at M = m, from its median at the previous M (same N), linear in M."""
    if name not in previous:
        return 0.0
    m_previous, median = previous[name]
    return median * m / m_previous


def run(sizes: list[int], modalities: list[int], repeats: int,
        max_seconds: float | None = None) -> list[dict]:
    rows = []
    for n in sizes:
        previous: dict[str, tuple[int, float]] = {}  # method -> (M, median) of its last cell at this N
        for m in modalities:
            codes = clustered_codes(n, m)
            rotations = previous_rotations(codes) if set(ALIGNED) & set(METHODS) else {}
            mixed: dict[str, list[np.ndarray]] = {}
            init_objective = barycenter_objective(codes[0], codes, ALPHA)
            methods = {name: method for name, method in METHODS.items()
                       if name == "ours" or max_seconds is None
                       or predicted_seconds(previous, name, m) <= max_seconds}
            seconds: dict[str, list[float]] = {name: [] for name in methods}
            solutions: dict[str, np.ndarray] = {}
            for _ in range(repeats):
                for name, method in methods.items():  # interleaved, so load hits all alike
                    spent = seconds[name]
                    if (name != "ours" and max_seconds is not None and spent
                            and sum(spent) + max(spent) > max_seconds):
                        continue
                    start = time.perf_counter()
                    mixed[name] = common_frame(codes, rotations, ALIGNED[name]) if name in ALIGNED else codes
                    solutions[name] = method(mixed[name])
                    spent.append(time.perf_counter() - start)
            cell = []
            for name in methods:
                median = statistics.median(seconds[name])
                previous[name] = (m, median)
                cell.append({"n": n, "m": m, "method": name, "median_seconds": median,
                             "objective": barycenter_objective(solutions[name], mixed[name], ALPHA),
                             "init_objective": init_objective, "seconds": seconds[name],
                             "repeats": len(seconds[name])})
            print_rows(cell, skipped=[name for name in METHODS if name not in methods], n=n, m=m)
            rows.extend(cell)
    return rows


def print_rows(rows: list[dict], skipped: list[str], n: int, m: int) -> None:
    by_method = {row["method"]: row for row in rows}

    def ratio(baseline: str, row: dict) -> str:  # baseline time / this time
        if baseline not in by_method:
            return "     -"
        return f"{by_method[baseline]['median_seconds'] / row['median_seconds']:6.2f}x"

    for row in rows:
        print(f"| {n:5d} | {m:3d} | {row['method']:20s} | {row['median_seconds']:8.3f} "
              f"| {ratio('pot_fgw_barycenters', row)} | {ratio('paper_loop', row)} "
              f"| {row['median_seconds'] / by_method['ours']['median_seconds']:6.2f}x "
              f"| {row['objective']:8.4f} | {row['init_objective']:8.4f} | {row['repeats']} |", flush=True)
    for name in skipped:
        print(f"| {n:5d} | {m:3d} | {name:20s} |  skipped |        - |         - |       - |         - "
              f"|            - | 0 |", flush=True)


def growth_exponents(rows: list[dict], method: str = "ours") -> tuple[dict[int, float], dict[int, float]]:
    """Log-log least-squares slopes of ``method``'s median time: against N at each M (at least
    two sizes), and against M at each N (at least two M)."""
    times = {(row["n"], row["m"]): row["median_seconds"] for row in rows if row["method"] == method}
    sizes = sorted({n for n, _ in times})
    modalities = sorted({m for _, m in times})

    def slope(xs: list[int], ys: list[float]) -> float:
        return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])

    in_n = {m: slope(sizes, [times[n, m] for n in sizes]) for m in modalities if len(sizes) > 1}
    in_m = {n: slope(modalities, [times[n, m] for m in modalities]) for n in sizes if len(modalities) > 1}
    return in_n, in_m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,400,1000")
    parser.add_argument("--modalities", default="2,3,6,12")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds-per-cell", type=float, default=None,
                        help="time budget of each baseline in each cell (see the module docstring)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print("|     N |   M | method               |  median s | POT/this | loop/this | this/ours | objective "
          "| Z_B=Z_1 obj | runs |")
    print("|------:|----:|----------------------|----------:|---------:|----------:|----------:|----------:"
          "|------------:|-----:|")
    rows = run([int(s) for s in args.sizes.split(",")],
               [int(s) for s in args.modalities.split(",")], args.repeats, args.max_seconds_per_cell)
    in_n, in_m = growth_exponents(rows)
    for m, exponent in in_n.items():
        print(f"ours: time ~ N^{exponent:.2f} at M = {m}")
    for n, exponent in in_m.items():
        print(f"ours: time ~ M^{exponent:.2f} at N = {n}")
    if args.json:
        write_json(args.json, rows)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
