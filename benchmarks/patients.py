"""Different patients at each modality: what OTM does when the modalities hold different samples,
with shifted class mixes and a few declared pairs, against each modality training alone.

    python benchmarks/patients.py [--datasets synthetic,handwritten,prokaryotic]
        [--cohorts overlap=0:shift=0.5:paired=0,...] [--methods local-only,otm] [--seeds 5]
        [--first-seed 0] [--jobs J] [--json PATH]
    python benchmarks/patients.py --table PATH[,PATH...]

A cohort is ``overlap=O:shift=S:paired=P``: the share O of the samples (other than the paired
ones) held by every modality, the class-shift concentration S (0: off), and the share P of all
samples held by every modality and declared (``anchors`` = round(P N)). Per data set, cohort and
seed, one in-process run per method with the scenario's frozen settings; ``batch-size`` is the
scenario's unless a modality holds fewer rows, then that modality's rows (printed). Per view:
final-round ACC and purity on the modality's own rows; per OTM run: the plans' class mass over
the rounds (the alignment diagnostic; what lands on samples of the same class) against its chance
(sum_c p_a(c) p_b(c)), seconds and the run's peak memory. Differences are paired per seed (mean ±
standard error; "clearly" = beyond two SE).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otm_fed.config import resolve_config  # noqa: E402
from otm_fed.results import SUMMARY_FILE, new_folder, read_rounds, write_json  # noqa: E402
from otm_fed.scenario import held_rows, scenario_dataset  # noqa: E402
from sites import call  # noqa: E402  (the verdict every benchmark table prints)

DATASETS = ("synthetic", "handwritten", "prokaryotic")
COHORTS = tuple(f"overlap={o}:shift={s}:paired={p}" for o in ("1", "0.5", "0") for s in ("0", "0.5")
                for p in ("0", "0.05", "0.2") if not (o == "1" and s != "0"))
METHODS = ("local-only", "otm")


def parse_cohort(text: str) -> dict[str, float]:
    """``overlap=O:shift=S:paired=P`` as numbers (each part optional: overlap 1, shift 0, paired 0)."""
    cohort = {"overlap": 1.0, "shift": 0.0, "paired": 0.0}
    for part in filter(None, text.split(":")):
        key, _, value = part.partition("=")
        if key not in cohort:
            raise ValueError(f"unknown cohort part {key!r} in {text!r}; parts are overlap, shift, paired")
        cohort[key] = float(value)
    return cohort


def cohort_config(dataset: str, cohort: dict[str, float], method: str, seed: int) -> dict[str, Any]:
    """The scenario's config for a cohort, with ``batch-size`` cut to the smallest modality's rows."""
    overrides = {"strategy": method, "seed": str(seed), "overlap": str(cohort["overlap"]),
                 "class-shift": str(cohort["shift"])}
    config = resolve_config(dataset, overrides)
    n_samples = scenario_dataset(config).n_samples
    config = resolve_config(dataset, {**overrides, "anchors": str(int(round(cohort["paired"] * n_samples)))})
    data = scenario_dataset(config)
    smallest = min(len(held_rows(config, data, m)) for m in range(config["num-modalities"] or data.n_views))
    if smallest < config["batch-size"]:
        config = resolve_config(dataset, {**overrides, "anchors": str(config["anchors"]), "batch-size": str(smallest)})
    return config


def run_one(job: tuple) -> dict[str, Any]:
    """One run's row: per-view final ACC and purity, the plans' class mass, seconds, peak memory."""
    from launcher.inprocess import run_inprocess

    dataset, cohort_text, method, seed, runs_dir = job
    cohort = parse_cohort(cohort_text)
    config = cohort_config(dataset, cohort, method, seed)
    n_nodes = config["num-modalities"] or scenario_dataset(config).n_views
    run_dir = runs_dir / f"{Path(dataset).stem}-{cohort_text.replace(':', '-')}-{method}-seed{seed}"
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_inprocess(config, n_nodes, run_dir)
    seconds = time.perf_counter() - started
    final = json.loads((run_dir / SUMMARY_FILE).read_text())["final"]
    alignment = [row["alignment"] for row in read_rounds(run_dir) if "alignment" in row]
    return {"dataset": Path(dataset).stem, "cohort": cohort_text, "method": method, "seed": seed,
            "batch_size": config["batch-size"], "anchors": config["anchors"],
            "acc_per_modality": final["acc_per_modality"], "purity_per_modality": final["purity_per_modality"],
            "class_mass": float(np.mean([a["class_mass"] for a in alignment])) if alignment else None,
            "class_mass_chance": float(np.mean([a["class_mass_chance"] for a in alignment])) if alignment else None,
            "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "run_dir": str(run_dir)}


def paired(values: dict[Any, float], baseline: dict[Any, float]) -> tuple[float, float, int] | None:
    """Mean and standard error of value - baseline over the keys both have (seeds, or runs)."""
    differences = [values[seed] - baseline[seed] for seed in values if seed in baseline]
    if len(differences) < 2:
        return None
    return float(np.mean(differences)), float(np.std(differences, ddof=1) / np.sqrt(len(differences))), len(differences)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data set | cohort | seeds | ACC local-only | otm | otm - local-only (mean over views) | "
             "views clearly below | views clearly above | plan class mass - chance | purity otm - local-only | "
             "s/run local-only, otm | peak MB otm |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for cohort in dict.fromkeys(r["cohort"] for r in rows if r["dataset"] == dataset):
            runs = {method: {r["seed"]: r for r in rows if r["dataset"] == dataset and r["cohort"] == cohort
                             and r["method"] == method} for method in METHODS}
            local, otm = runs["local-only"], runs["otm"]
            if not local or not otm:
                continue
            n_views = len(next(iter(otm.values()))["acc_per_modality"])

            def of(method_runs: dict[int, dict], key: str, view: int | None = None) -> dict[int, float]:
                return {seed: float(np.mean(r[key]) if view is None else r[key][view]) for seed, r in method_runs.items()}

            calls = [call(paired(of(otm, "acc_per_modality", v), of(local, "acc_per_modality", v))) for v in range(n_views)]
            mass = {seed: r["class_mass"] - r["class_mass_chance"] for seed, r in otm.items() if r["class_mass"] is not None}
            lines.append(
                f"| {dataset} | {cohort} | {len(otm)} | {np.mean(list(of(local, 'acc_per_modality').values())):.4f} | "
                f"{np.mean(list(of(otm, 'acc_per_modality').values())):.4f} | "
                f"{call(paired(of(otm, 'acc_per_modality'), of(local, 'acc_per_modality')))} | "
                f"{[v for v, c in enumerate(calls) if 'clearly below' in c] or 'none'} | "
                f"{[v for v, c in enumerate(calls) if 'clearly above' in c] or 'none'} | "
                f"{call(paired(mass, dict.fromkeys(mass, 0.0)))} | "
                f"{call(paired(of(otm, 'purity_per_modality'), of(local, 'purity_per_modality')))} | "
                f"{np.median([r['seconds'] for r in local.values()]):.0f}, "
                f"{np.median([r['seconds'] for r in otm.values()]):.0f} | "
                f"{np.median([r['peak_rss_mb'] for r in otm.values()]):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--cohorts", default=",".join(COHORTS), help="overlap=O:shift=S:paired=P, comma separated")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    parser.add_argument("--runs-dir", help="where run folders go (default a new runs/patients-...)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--table", metavar="JSON[,JSON...]", help="print the table of earlier rows and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table([row for path in args.table.split(",") for row in json.loads(Path(path).read_text())]))
        return 0
    methods = args.methods.split(",")
    if set(methods) - set(METHODS):
        parser.error(f"unknown methods {sorted(set(methods) - set(METHODS))}; known: {', '.join(METHODS)}")
    cohorts = args.cohorts.split(",")
    for cohort in cohorts:
        try:
            parse_cohort(cohort)
        except ValueError as error:
            parser.error(str(error))
    runs_dir = Path(args.runs_dir) if args.runs_dir else new_folder("runs", "patients")
    jobs = [(dataset, cohort, method, seed, runs_dir) for dataset in args.datasets.split(",") for cohort in cohorts
            for seed in range(args.first_seed, args.first_seed + args.seeds) for method in methods]
    rows = []
    with ProcessPoolExecutor(args.jobs, max_tasks_per_child=1) as pool:  # one process a run: its peak memory
        for row in pool.map(run_one, jobs):
            rows.append(row)
            print(f"{row['dataset']} {row['cohort']} {row['method']} seed {row['seed']}: ACC "
                  f"{np.mean(row['acc_per_modality']):.4f} batch {row['batch_size']} ({row['seconds']:.0f} s)", flush=True)
            if args.json:
                write_json(args.json, rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
