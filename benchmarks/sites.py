"""Several sites per modality: what a site gains from its modality's other sites (FedAvg) and from
the other modalities (OTM) on top, against one site holding all of a modality's rows.

    python benchmarks/sites.py [--datasets synthetic,prokaryotic,handwritten] [--sites 5]
        [--splits iid,dirichlet:0.5] [--seeds 5] [--first-seed 0] [--rounds N] [--jobs J] [--json PATH]
    python benchmarks/sites.py --table PATH[,PATH...]

Per data set, split and seed, four in-process runs with the scenario's frozen settings:
  alone     every site trains its own WAE (``site-avg-every = 0``), no mixing
  fedavg    the WAE averaged across a modality's sites every round (FedAvg), no mixing
  fedavg+otm  FedAvg within a modality and the default OTM across modalities
  fedavg-steps  (not in the default grid) fedavg with ``epochs`` x sites, so that a site makes about
            as many steps a round as its modality held at one site would
  one-site  today's federation: one site holds every row of its modality (trained once per seed);
            its final encoders are scored on each split's site rows (``one_site_scores``), as the
            sites score themselves
Each site scores k-means on its own rows; a modality's score is its sites' weighted by rows. The
table gives per-modality ACC (mean over modalities and seeds) and the paired per-seed differences
(mean ± standard error over seeds of the per-modality mean; "clearly" = beyond two SE), and, per
modality, whether fedavg+otm is clearly below fedavg. Final round only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otm_fed.config import resolve_config  # noqa: E402
from otm_fed.results import SUMMARY_FILE, new_folder, write_json  # noqa: E402
from otm_fed.scenario import scenario_dataset, site_counts  # noqa: E402

DATASETS = ("synthetic", "prokaryotic", "handwritten")
SPLITS = ("iid", "dirichlet:0.5")
METHODS: dict[str, dict[str, str]] = {
    "alone": {"strategy": "local-only", "site-avg-every": "0"},
    "fedavg": {"strategy": "local-only"},
    "fedavg+otm": {"strategy": "otm"},
    "one-site": {"strategy": "local-only", "sites": "1"},
    "fedavg-steps": {"strategy": "local-only"},  # and epochs x sites: see run_one
}
DEFAULT_METHODS = ("alone", "fedavg", "fedavg+otm", "one-site")


def run_one(job: tuple) -> list[dict[str, Any]]:
    """One run's rows, one per split: per-modality and per-site final ACC (the one-site run trains
    once and is scored on each split's sites)."""
    from launcher.inprocess import run_inprocess

    dataset, splits, method, seed, sites, rounds, runs_dir = job
    overrides = {"sites": str(sites), "site-split": splits[0], **METHODS[method], "seed": str(seed)}
    if rounds:
        overrides["rounds"] = str(rounds)
    if method == "fedavg-steps":  # each site makes as many steps a round as its modality at one site would
        overrides["epochs"] = str(resolve_config(dataset)["epochs"] * sites)
    config = resolve_config(dataset, overrides)
    n_nodes = sum(site_counts(config, config["num-modalities"] or scenario_dataset(config).n_views))
    label = "all" if method == "one-site" else splits[0].replace(":", "")
    run_dir = runs_dir / f"{Path(dataset).stem}-{label}-{method}-seed{seed}"
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_inprocess(config, n_nodes, run_dir)
    seconds = time.perf_counter() - started
    rows = []
    for split in splits:
        final = json.loads((run_dir / SUMMARY_FILE).read_text())["final"]
        if method == "one-site":  # scored on each site's rows, as the sites score themselves
            final = one_site_scores(config, run_dir, sites, split)
        rows.append({"dataset": Path(dataset).stem, "split": split, "method": method, "seed": seed, "sites": sites,
                     "acc_per_modality": final["acc_per_modality"], "acc_per_site": final.get("acc_per_site", {}),
                     "seconds": seconds, "run_dir": str(run_dir)})
    return rows


def one_site_scores(config: dict[str, Any], run_dir: Path, sites: int, split: str) -> dict[str, Any]:
    """The one-site run's final encoders scored as the sites score themselves: k-means on the
    codes of each site's rows (``sites_rows`` of ``split``), a modality's ACC its sites' weighted by
    rows. The one site normalised the whole view, so its rows are read from that."""
    from otm_fed.agent import ModalityAgent, latest_checkpoint
    from otm_fed.metrics import kmeans_scores
    from otm_fed.scenario import modality_data, sites_rows

    dataset = scenario_dataset(config)
    split_config = {**config, "sites": str(sites), "site-split": split}
    n_clusters = config["n-clusters"] or dataset.n_classes
    per_site, per_modality = {}, []
    for modality in range(config["num-modalities"] or dataset.n_views):
        agent = ModalityAgent(modality, modality_data(config, modality), config)
        agent.load_state_arrays(latest_checkpoint(run_dir / "agents", modality, config["rounds"] + 1))
        accs, weights = [], []
        for site, held in enumerate(sites_rows(split_config, modality, dataset)):
            rows = np.sort(held)
            scores = kmeans_scores(agent.encode(agent.data.evaluation[rows]), dataset.labels[rows], n_clusters,
                                   config["kmeans-init"], config["seed"])
            per_site[f"{modality}.{site}"] = scores["acc"]
            accs.append(scores["acc"])
            weights.append(len(rows))
        per_modality.append(float(np.average(accs, weights=weights)))
    return {"acc_per_modality": per_modality, "acc_per_site": per_site}


def paired(rows: list[dict[str, Any]], dataset: str, split: str, method: str, baseline: str,
           modality: int | None = None) -> tuple[float, float, int] | None:
    """Mean and standard error over seeds of method - baseline: the per-modality ACC of
    ``modality``, or their mean."""
    def value(row: dict[str, Any]) -> float:
        accs = row["acc_per_modality"]
        return float(accs[modality] if modality is not None else np.mean(accs))

    def of(name: str) -> dict[int, float]:
        return {r["seed"]: value(r) for r in rows if r["dataset"] == dataset and r["method"] == name
                and r["split"] == split}

    ours, theirs = of(method), of(baseline)
    differences = [ours[seed] - theirs[seed] for seed in ours if seed in theirs]
    if len(differences) < 2:
        return None
    return float(np.mean(differences)), float(np.std(differences, ddof=1) / np.sqrt(len(differences))), len(differences)


def call(difference: tuple[float, float, int] | None) -> str:
    if difference is None:
        return "n/a"
    mean, error, _ = difference
    verdict = "clearly above" if mean > 2 * error else "clearly below" if mean < -2 * error else "tie"
    return f"{mean:+.4f} ± {error:.4f} ({verdict})"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data set | split | seeds | ACC alone | fedavg | fedavg+otm | one-site | fedavg - alone | "
             "fedavg - one-site | fedavg+otm - fedavg | modalities where fedavg+otm is clearly below fedavg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    steps = ["", "| data set | split | ACC fedavg-steps | one-site | fedavg-steps - one-site | fedavg-steps - fedavg |",
             "|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for split in dict.fromkeys(r["split"] for r in rows if r["dataset"] == dataset):
            def mean_acc(method: str) -> str:
                values = [np.mean(r["acc_per_modality"]) for r in rows if r["dataset"] == dataset and r["method"] == method
                          and r["split"] == split]
                return f"{np.mean(values):.4f}" if values else "n/a"

            n_modalities = len(next(r for r in rows if r["dataset"] == dataset)["acc_per_modality"])
            below = [m for m in range(n_modalities) if "clearly below" in call(paired(rows, dataset, split, "fedavg+otm",
                                                                                        "fedavg", m))]
            seeds = len({r["seed"] for r in rows if r["dataset"] == dataset and r["split"] == split})
            if any(r["method"] == "fedavg-steps" for r in rows if r["dataset"] == dataset and r["split"] == split):
                steps.append(f"| {dataset} | {split} | {mean_acc('fedavg-steps')} | {mean_acc('one-site')} | "
                             f"{call(paired(rows, dataset, split, 'fedavg-steps', 'one-site'))} | "
                             f"{call(paired(rows, dataset, split, 'fedavg-steps', 'fedavg'))} |")
            lines.append(f"| {dataset} | {split} | {seeds} | {mean_acc('alone')} | {mean_acc('fedavg')} | "
                         f"{mean_acc('fedavg+otm')} | {mean_acc('one-site')} | "
                         f"{call(paired(rows, dataset, split, 'fedavg', 'alone'))} | "
                         f"{call(paired(rows, dataset, split, 'fedavg', 'one-site'))} | "
                         f"{call(paired(rows, dataset, split, 'fedavg+otm', 'fedavg'))} | {below or 'none'} |")
    return "\n".join(lines + (steps if len(steps) > 3 else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--sites", type=int, default=5, help="sites per modality")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, help="override every scenario's rounds")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    parser.add_argument("--runs-dir", help="where run folders go (default a new runs/sites-...)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--table", metavar="JSON[,JSON...]", help="print the table of earlier rows and stop")
    args = parser.parse_args(argv)
    if args.table:
        rows = [row for path in args.table.split(",") for row in json.loads(Path(path).read_text())]
        print(table(rows))
        return 0
    methods = args.methods.split(",")
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    splits = args.splits.split(",")
    runs_dir = Path(args.runs_dir) if args.runs_dir else new_folder("runs", "sites")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(dataset, tuple(splits) if method == "one-site" else (split,), method, seed, args.sites, args.rounds, runs_dir)
            for dataset in args.datasets.split(",") for seed in seeds for method in methods
            for split in (splits[:1] if method == "one-site" else splits)]
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for run_rows in pool.map(run_one, jobs):
            for row in run_rows:
                rows.append(row)
                print(f"{row['dataset']} {row['split']} {row['method']} seed {row['seed']}: "
                      f"ACC {np.mean(row['acc_per_modality']):.4f} ({row['seconds']:.0f} s)", flush=True)
            if args.json:
                write_json(args.json, rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
