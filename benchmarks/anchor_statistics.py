"""Label-free anchor statistics along runs whose gate never opens: could any of them tell a real
but noisy correspondence (the synthetic weak view) from a nuisance one (Movies)?

    python benchmarks/anchor_statistics.py [--datasets synthetic,movies,prokaryotic] [--seeds 0,1,2,3]
        [--anchors 10] [--json PATH]
    python benchmarks/anchor_statistics.py --table PATH

Each run is the scenario's OTM, unaligned, with ``anchors = K`` and ``anchor-gate-threshold = 2``:
nothing ever mixes, so every round's codes are never-mixed codes, as the gate judges them. The
benchmark wraps the strategy's ``align_frames`` to read what the server sees each round: per
modality m and the reference r, the anchors' codes A_m, A_r (rows in correspondence) and the
unaligned batches Z_m, Z_r, each standardised as ``align_frames`` does. Statistics:

- ``gate``: the gate's own reading, ``anchor_confidence(A_m, A_r)`` (the jackknife minimum of the
  Procrustes fit gain over random re-pairings of the anchors);
- ``subspace``: the same after projecting each modality's anchors onto the top p = C - 1
  principal axes of its own batch (C clusters span at most C - 1 between-class directions;
  p = min(C - 1, d)), so that the fit is judged where the clusters are and not in noise axes;
- ``batch-gain``: 1 - W(Q_a) / mean_pi W(Q_pi), with Q_a orthogonal Procrustes on the anchors,
  Q_pi the same on anchors re-paired at random (``BATCH_PERMUTATIONS`` of them) and W(Q) the exact
  OT cost between Z_m Q and Z_r: does the anchors' map explain the unaligned batches better than a
  map from a wrong pairing? It uses the batches, which the anchor statistics ignore;
- ``retrieval``: each anchor of m mapped by the scaled Procrustes fit on the other K - 1 (in the
  top min(C - 1, K - 2) principal axes, so that K - 1 anchors determine the map), and the rank of
  its own partner among r's K anchors: 1 - (mean rank - 1) / ((K - 1) / 2). A count of anchors
  that land on their partner, so one extreme pair weighs 1/K;
- ``partition-agreement``: each modality's own k-means partition of its batch (C clusters), read
  through the exact OT plan of the two batches in the server's common frame (anchor-fitted, batch-
  refined: the frames the mix uses), as NMI above the NMI of random pairings, rescaled to 1 for a
  plan that pairs cluster with cluster. It asks whether the plan carries one modality's clusters
  onto the other's, which is what mixing would use.

Each run's folder under ``--runs-dir`` is replaced. Prints per run and modality the largest mean
over ``gate-window`` consecutive rounds of each statistic (what decides whether the gate opens),
the same as a range over seeds, and the round at which ``CANDIDATE_RULE`` (both retrieval and
partition agreement above a threshold) would open each modality; writes a row per run and
modality with every round's values. No labels are read. Docs:
docs/alignment.md, "Four more anchor statistics (sessions 9-10)".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otm_fed.config import DEFAULTS, ConfigError, gate_thresholds, resolve_config  # noqa: E402
from otm_fed.frames import (FrameAlignment, anchor_confidence, anchor_rotation, anchor_rule_readings,  # noqa: E402
                            own_partition, principal_projection)
from otm_fed.transport import exact_ot_vertex, squared_distances, uniform  # noqa: E402
from otm_fed.results import write_json  # noqa: E402
from local_training import rows_file, seed_list  # noqa: E402
from otm_fed.scenario import check_fits, scenario_dataset  # noqa: E402

STATISTICS = ("gate", "subspace", "batch-gain", "retrieval", "partition-agreement")
BATCH_PERMUTATIONS = 10
# The candidate rule chosen on seeds 0-3 (session 10): the gate of ``anchor-gate = retrieval-partition``,
# with the thresholds frozen in otm_fed/config.py (refuted end to end in session 11, docs/alignment.md).
CANDIDATE_RULE = gate_thresholds({**DEFAULTS, "anchors": 1, "anchor-gate": "retrieval-partition"})


def ot_cost(x: np.ndarray, y: np.ndarray) -> float:
    """The exact OT cost min_T <T, D(x, y)> between uniform weights."""
    cost = squared_distances(x, y)
    (rows, cols, values), _ = exact_ot_vertex(cost, uniform(len(x)), uniform(len(y)))
    return float(cost[rows, cols] @ values)


def batch_gain(z_m: np.ndarray, z_r: np.ndarray, a_m: np.ndarray, a_r: np.ndarray, rng: np.random.Generator) -> float:
    """1 - W(Q_a) / mean_pi W(Q_pi) on standardised batches and anchors (module docstring)."""
    fitted = ot_cost(z_m @ anchor_rotation(a_m, a_r), z_r)
    null = np.mean([ot_cost(z_m @ anchor_rotation(a_m[rng.permutation(len(a_m))], a_r), z_r)
                    for _ in range(BATCH_PERMUTATIONS)])
    return 1.0 - fitted / null if null > 0 else 0.0


def statistics(codes: dict[int, np.ndarray], anchors: dict[int, np.ndarray], alignment: FrameAlignment,
               n_clusters: int, seed: int, rng: np.random.Generator) -> dict[int, dict[str, float]]:
    """Per modality but the reference: every statistic of its fit to the reference (the gate's own
    reading from ``alignment``, whose frames the mix would use)."""
    reference, frames = alignment.reference, alignment.frames
    scaled = {m: ((codes[m] - frames[m].centre) / frames[m].scale, (anchors[m] - frames[m].centre) / frames[m].scale)
              for m in codes}  # standardised as align_frames did: the frames' centre and scale
    common = {m: frames[m].to_common(z) for m, z in codes.items()}
    partitions = {m: own_partition(z, n_clusters, seed) for m, z in common.items()}
    p = min(max(n_clusters - 1, 1), codes[reference].shape[1])
    found = {}
    for m in sorted(codes):
        if m == reference:
            continue
        (z_m, a_m), (z_r, a_r) = scaled[m], scaled[reference]
        found[m] = {"gate": alignment.confidences[m],
                    "subspace": anchor_confidence(principal_projection(z_m, a_m, p), principal_projection(z_r, a_r, p), rng),
                    "batch-gain": batch_gain(z_m, z_r, a_m, a_r, rng),
                    **anchor_rule_readings(scaled[m], scaled[reference], common[m], common[reference], partitions[m],
                                           partitions[reference], n_clusters, rng)}
    return found


def run_config(dataset: str, seed: int, n_anchors: int) -> dict[str, Any]:
    """The scenario's OTM with ``n_anchors`` anchors and a gate that never opens, checked against its data."""
    config = resolve_config(dataset, {"strategy": "otm", "anchors": str(n_anchors), "anchor-gate-threshold": "2",
                                      "aligned": "false", "seed": str(seed)})
    check_fits(config, scenario_dataset(config))
    return config


def run_rows(dataset: str, seed: int, n_anchors: int, runs_dir: Path) -> list[dict[str, Any]]:
    """One never-mixed anchored run; a row per modality with every statistic's value per round."""
    import server.strategy as strategy
    from launcher.inprocess import run_inprocess

    config = run_config(dataset, seed, n_anchors)
    data = scenario_dataset(config)
    n_clusters = config["n-clusters"] or data.n_classes
    rng = np.random.default_rng([seed, 10])
    readings: dict[int, dict[str, list[float]]] = {}
    align_frames = strategy.align_frames

    def reading(codes, rotations, gw_starts, fit_rng, search=False, anchors=None, n_clusters_=0):
        alignment = align_frames(codes, rotations, gw_starts, fit_rng, search, anchors, n_clusters_)
        if anchors is not None:
            for m, values in statistics(codes, anchors, alignment, n_clusters, seed, rng).items():
                own = readings.setdefault(m, {name: [] for name in STATISTICS})
                for name, value in values.items():
                    own[name].append(round(float(value), 4))
        return alignment

    run_dir = runs_dir / f"{Path(dataset).stem}-anchors-{n_anchors}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # the benchmark's own run of this name, from an earlier call
    strategy.align_frames = reading
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run_inprocess(config, data.n_views, run_dir)
    finally:
        strategy.align_frames = align_frames
    return [{"dataset": Path(dataset).stem, "seed": seed, "anchors": n_anchors, "modality": m, **values}
            for m, values in sorted(readings.items())]


def window_means(values: list[float], window: int) -> np.ndarray:
    """The mean over each ``window`` consecutive rounds (over all of them when fewer); entry i ends
    at round i + min(window, len(values))."""
    width = min(window, len(values))
    return np.convolve(values, np.ones(width) / width, "valid")


def largest_window_mean(values: list[float], window: int) -> float:
    """The largest mean over ``window`` consecutive rounds (all of them when fewer)."""
    return float(window_means(values, window).max())


def table(rows: list[dict[str, Any]], window: int) -> str:
    lines = [f"| data set | seed | modality | {' | '.join(STATISTICS)} |", "|---|---|---|" + "---|" * len(STATISTICS)]
    for row in rows:
        lines.append(f"| {row['dataset']} | {row['seed']} | {row['modality']} | "
                     + " | ".join(f"{largest_window_mean(row[name], window):.2f}" for name in STATISTICS) + " |")
    return "\n".join(lines)


def first_open_round(row: dict[str, Any], window: int, rule: dict[str, float] = CANDIDATE_RULE) -> int | None:
    """The first round at which every statistic of ``rule`` has a ``window``-round mean at or above
    its threshold (None if never): when a gate with that rule would open the modality."""
    reached = np.logical_and.reduce([window_means(row[name], window) >= threshold for name, threshold in rule.items()])
    rounds = np.nonzero(reached)[0]
    return int(rounds[0]) + min(window, len(row["gate"])) if len(rounds) else None


def rule_table(rows: list[dict[str, Any]], window: int) -> str:
    """Per (data set, modality): the round the candidate rule would open it, per seed ("-": never)."""
    seeds = sorted({row["seed"] for row in rows})
    lines = ["| data set | modality | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for dataset, modality in dict.fromkeys((row["dataset"], row["modality"]) for row in rows):
        opened = {row["seed"]: first_open_round(row, window) for row in rows
                  if (row["dataset"], row["modality"]) == (dataset, modality)}
        cells = [("" if seed not in opened else str(opened[seed] or "-")) for seed in seeds]
        lines.append(f"| {dataset} | {modality} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def range_table(rows: list[dict[str, Any]], window: int) -> str:
    """Per (data set, modality): each statistic's largest window mean, lowest - highest over seeds."""
    lines = [f"| data set | modality | seeds | {' | '.join(STATISTICS)} |", "|---|---|---|" + "---|" * len(STATISTICS)]
    for dataset, modality in dict.fromkeys((row["dataset"], row["modality"]) for row in rows):
        own = [row for row in rows if (row["dataset"], row["modality"]) == (dataset, modality)]
        cells = []
        for name in STATISTICS:
            values = [largest_window_mean(row[name], window) for row in own]
            cells.append(f"{min(values):.2f} - {max(values):.2f}")
        lines.append(f"| {dataset} | {modality} | {len(own)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,movies,prokaryotic", help="names or scenario .toml paths")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2,3")
    parser.add_argument("--anchors", type=int, default=10)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/anchor-statistics"))
    parser.add_argument("--json", type=Path, help="write every round's rows here")
    parser.add_argument("--table", type=rows_file, help="only print the table of rows written earlier")
    args = parser.parse_args(argv)
    if args.anchors < 1 and not args.table:
        parser.error("--anchors must be at least 1")
    window = DEFAULTS["gate-window"]
    if args.table:
        rows = json.loads(args.table.read_text())
    else:
        datasets, seeds = list(filter(None, args.datasets.split(","))), args.seeds
        try:  # every run's settings refused before the first starts
            for dataset in datasets:
                run_config(dataset, seeds[0], args.anchors)
        except ConfigError as error:
            parser.error(str(error))
        rows = []
        for dataset in datasets:
            for seed in seeds:
                run = run_rows(dataset, seed, args.anchors, args.runs_dir)
                rows += run
                print(table(run, window), flush=True)
        if args.json:
            write_json(args.json, rows)
    print(f"\nlargest {window}-round mean, per run and modality (never-mixed codes)\n" + table(rows, window)
          + "\n\nthe same, lowest - highest over seeds\n" + range_table(rows, window)
          + "\n\nthe round the candidate rule (" + ", ".join(f"{name} >= {t}" for name, t in CANDIDATE_RULE.items())
          + ") would open each modality\n" + rule_table(rows, window))


if __name__ == "__main__":
    main()
