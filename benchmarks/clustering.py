"""Clustering quality on the real data sets (the paper's Table 2), honestly.

Every run goes through the federated ServerApp / ClientApp via the in-process engine
(``launcher.inprocess``, the same strategy and client step functions as Flower's simulation),
with each scenario file's frozen settings; scores are the final round's, never a round picked
by looking at labels. ``raw-kmeans`` is the anchor: k-means on each agent's normalised view.

    python benchmarks/clustering.py [--quick] [--datasets orl,movies,...,PATH.toml] [--methods ...]
        [--settings unaligned,aligned] [--seeds 5] [--first-seed 0] [--rounds N] [--jobs J] [--json PATH] [--runs-dir DIR]
        [--set KEY=VALUE ...]   # a config override for every run, on top of the method's
    python benchmarks/clustering.py --table PATH[,PATH...]   # the tables of earlier JSON (later runs replace earlier)
    python benchmarks/clustering.py --collect RUNS_DIR [--json PATH]   # rows of finished runs

Prints a Markdown table (mean +- std over seeds) and writes a JSON list of rows
``{"dataset", "method", "aligned", "seed", "anchors", "purity", "acc", "nmi", "ari", "purity_per_modality",
"fused_purity", ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/ too: a method's strategy may live here (``oracle:OracleStrategy``), and every worker must import it.
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from otm_fed.config import ConfigError, resolve_config  # noqa: E402
from otm_fed.metrics import kmeans_scores  # noqa: E402
from otm_fed.protocol import SCORE_NAMES  # noqa: E402
from otm_fed.results import CONFIG_FILE, SUMMARY_FILE, new_folder, read_rounds, write_json  # noqa: E402
from otm_fed.scenario import normalised_views, scenario_dataset, site_counts  # noqa: E402

DATASETS = ("synthetic", "orl", "movies", "prokaryotic", "handwritten")
# "otm" is the default: frames aligned on the server and the label-free gate (otm_fed.frames);
# "otm-paper" and the ablations mix the codes as they come, as the paper does.
PAPER = {"align": "none"}
METHODS: dict[str, dict[str, str] | None] = {
    "raw-kmeans": None,  # no training
    "local-only": {"strategy": "local-only"},
    "otm": {"strategy": "otm", "mask": "binary"},
    "otm-no-gate": {"strategy": "otm", "gate-threshold": "0.0"},
    "otm-no-shared-init": {"strategy": "otm", "shared-init": "false"},
    "otm-paper": {"strategy": "otm", **PAPER},
    "otm-dirichlet": {"strategy": "otm", "mask": "dirichlet", **PAPER},
    "otm-wb": {"strategy": "otm", "mask": "none", **PAPER},
    "otm-w": {"strategy": "otm", "alpha": "1.0", **PAPER},
    "otm-gw": {"strategy": "otm", "alpha": "0.0", **PAPER},
    **{f"otm-anchors-{k}": {"strategy": "otm", "anchors": str(k)} for k in (5, 10, 25, 50)},
    # The correspondence oracle (benchmarks/oracle.py; simulation only): true pairs, T_m = I / N, no gate.
    # Its batches are aligned in either setting: under "unaligned" it is that setting's bound.
    "otm-oracle": {"strategy": "oracle:OracleStrategy", "aligned": "true"},
    "otm-oracle-70": {"strategy": "oracle:PartialOracleStrategy", "aligned": "true"},
    "otm-oracle-swap": {"strategy": "oracle:ClassSwapOracleStrategy", "aligned": "true"},
}
# Whether each modality takes up its target (otm_fed/uptake.py), on any route above: "-flow" (the
# server's direction of flow) alone, "-guard" (the agent's guard) alone, both (the default), or
# "-take-all" (neither: every mixed modality takes its target every round, as the paper does).
UPTAKES = {"-flow": {"target-flow": "true", "target-guard": "false"},
           "-guard": {"target-flow": "false", "target-guard": "true"},
           "-flow-guard": {"target-flow": "true", "target-guard": "true"},
           "-take-all": {"target-flow": "false", "target-guard": "false"}}
METHODS.update({f"{route}{uptake}": {**METHODS[route], **settings} for uptake, settings in UPTAKES.items()
                for route in ("otm", "otm-oracle", "otm-oracle-70", "otm-oracle-swap", *(f"otm-anchors-{k}" for k in (10, 50)))})
SETTINGS = {"unaligned": False, "aligned": True}
QUICK_ROUNDS = 10
# Paper, Table 2, unaligned MWAE+OTM (most likely ACC at a label-selected epoch, see docs/findings/alignment-and-gate.md).
PAPER_UNALIGNED = {"orl": 0.6550, "movies": 0.2925, "prokaryotic": 0.5438}


def dataset_label(dataset: str) -> str:
    """A data set's name in rows and run folders: its name, or a scenario file's stem."""
    return Path(dataset).stem if dataset.endswith(".toml") else dataset


def raw_kmeans_row(dataset: str, aligned: bool, seed: int, data_dir: str) -> dict[str, Any]:
    """k-means on each agent's normalised raw view (mean over views) and on their concatenation."""
    config = resolve_config(dataset, {"seed": str(seed), "data-dir": data_dir})
    data = scenario_dataset(config)
    views = normalised_views(config, data)
    per_view = [kmeans_scores(v, data.labels, data.n_classes, config["kmeans-init"], seed) for v in views]
    fused = kmeans_scores(np.concatenate(views, axis=1), data.labels, data.n_classes, config["kmeans-init"], seed)
    row: dict[str, Any] = {"dataset": dataset_label(dataset), "method": "raw-kmeans", "aligned": aligned, "seed": seed}
    row.update({name: float(np.mean([s[name] for s in per_view])) for name in SCORE_NAMES})
    row.update({f"{name}_per_modality": [s[name] for s in per_view] for name in SCORE_NAMES})
    row.update({f"fused_{name}": value for name, value in fused.items()})
    return row


def federated_row(dataset: str, method: str, aligned: bool, seed: int, rounds: int | None, data_dir: str,
                  runs_dir: Path, settings: dict[str, str] | None = None) -> dict[str, Any]:
    """One run of the scenario's federated training (the method's overrides, then ``settings``);
    the final round's scores, and ``settings`` (``--set``) under "set" where there are any."""
    from launcher.inprocess import run_inprocess

    overrides = {**METHODS[method], **(settings or {}), "aligned": METHODS[method].get("aligned", str(aligned)),
                 "seed": str(seed), "data-dir": data_dir}
    if rounds:
        overrides["rounds"] = str(rounds)
    config = resolve_config(dataset, overrides)
    run_dir = runs_dir / f"{dataset_label(dataset)}-{method}-{'aligned' if aligned else 'unaligned'}-seed{seed}"
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_inprocess(config, sum(site_counts(config, config["num-modalities"] or scenario_dataset(config).n_views)),
                      run_dir)
    return {**row_from_run(run_dir), **({"set": dict(settings)} if settings else {}),
            "seconds": time.perf_counter() - started}


RUN_NAME = re.compile(rf"^(.+?)-({'|'.join(sorted(METHODS, key=len, reverse=True))})-"
                      rf"(unaligned|aligned)-seed(\d+)$")


def row_from_run(run_dir: Path) -> dict[str, Any]:
    """The row of a finished run folder named DATASET-METHOD-SETTING-seedS: its final scores and
    its last alignment diagnostic."""
    match = RUN_NAME.match(run_dir.name)
    if match is None:
        raise ValueError(f"{run_dir} is not named DATASET-METHOD-SETTING-seedS")
    dataset, method, setting, seed = match.groups()
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    anchors = tomllib.loads((run_dir / CONFIG_FILE).read_text()).get("anchors", 0)
    row = {"dataset": dataset, "method": method, "aligned": setting == "aligned", "seed": int(seed),
           "anchors": anchors, **summary["final"], "rounds": summary["rounds"], "run_dir": str(run_dir)}
    alignment = [r["alignment"] for r in read_rounds(run_dir) if "alignment" in r]
    if alignment:
        row["alignment"] = alignment[-1]
        row["class_mass_excess"] = float(np.mean([a["class_mass"] - a["class_mass_chance"] for a in alignment]))
    return row


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (data set, method, setting, seed): the last given, so that a rerun of some
    runs (after a change that touches only them) replaces them in an earlier grid's tables."""
    latest = {(row["dataset"], row["method"], row["aligned"], row["seed"]): row for row in rows}
    return list(latest.values())


def run_one(job: tuple) -> dict[str, Any]:
    dataset, method, aligned, seed, rounds, data_dir, runs_dir, settings = job
    if METHODS[method] is None:
        return raw_kmeans_row(dataset, aligned, seed, data_dir)
    return federated_row(dataset, method, aligned, seed, rounds, data_dir, runs_dir, settings)


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (dataset, method, setting): mean ± std over seeds."""
    lines = ["| dataset | method | setting | seeds | purity | ACC | NMI | ARI | purity per modality | "
             "fused purity | fused ACC | plan mass on true counterpart | class mass (chance), last round |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"], row["aligned"]), []).append(row)
    for (dataset, method, aligned), group in groups.items():
        per_modality = np.mean([r["purity_per_modality"] for r in group], axis=0)
        alignment = [r["alignment"]["true_mass"] for r in group if "true_mass" in r.get("alignment", {})]
        class_mass = [(r["alignment"]["class_mass"], r["alignment"]["class_mass_chance"]) for r in group
                      if "class_mass" in r.get("alignment", {})]
        cells = [dataset, method, "aligned" if aligned else "unaligned", str(len(group)),
                 *(mean_std([r[name] for r in group]) for name in SCORE_NAMES),
                 ", ".join(f"{v:.3f}" for v in per_modality),
                 mean_std([r["fused_purity"] for r in group]), mean_std([r["fused_acc"] for r in group]),
                 mean_std(alignment) if alignment else "-",
                 f"{mean_std([c for c, _ in class_mass])} ({np.mean([c for _, c in class_mass]):.3f})" if class_mass else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)



def paired_difference(rows: list[dict[str, Any]], dataset: str, score: str, method: str,
                      baseline: str) -> tuple[float, float, int] | None:
    """Mean and standard error over seeds of ``method - baseline`` (unaligned, same seed)."""
    by_seed = {(r["method"], r["seed"]): r[score] for r in rows
               if r["dataset"] == dataset and not r["aligned"] and r["method"] in (method, baseline)}
    differences = [by_seed[(method, seed)] - by_seed[(baseline, seed)]
                   for (name, seed) in by_seed if name == method and (baseline, seed) in by_seed]
    if not differences:
        return None
    error = float(np.std(differences, ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else float("nan")
    return float(np.mean(differences)), error, len(differences)


def verdict(above: bool) -> str:
    return "above" if above else "below"


def paired_call(mean: float, error: float, n: int) -> str:
    """The verdict on a paired difference: "clearly" above or below = beyond two standard errors."""
    if n < 2:
        return "one seed"
    return "clearly above" if mean > 2 * error else "clearly below" if mean < -2 * error else "tie"


def paired_table(rows: list[dict[str, Any]], baseline: str = "local-only") -> str:
    """Every trained method against ``baseline``, unaligned: ACC (mean ± std) and the paired
    per-seed ACC difference (mean ± standard error), "clearly" above or below = beyond two SE."""
    lines = [f"| dataset | method | seeds | ACC | - {baseline} ACC (paired) | verdict |", "|---|---|---|---|---|---|"]
    methods = [name for name in METHODS if METHODS[name] is not None and name != baseline]
    for dataset in DATASETS:
        for method in methods:
            difference = paired_difference(rows, dataset, "acc", method, baseline)
            if difference is None:
                continue
            mean, error, n = difference
            acc = [r["acc"] for r in rows if r["dataset"] == dataset and r["method"] == method and not r["aligned"]]
            lines.append(f"| {dataset} | {method} | {n} | {mean_std(acc)} | {mean:+.4f} ± {error:.4f} | "
                         f"{paired_call(mean, error, n)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def alignment_table(rows: list[dict[str, Any]]) -> str:
    """Per data set and method, unaligned: the plans' class mass above chance, averaged over the
    rounds that mixed (``class_mass_excess``), mean ± standard error over seeds; "clearly above"
    chance = beyond two standard errors."""
    lines = ["| dataset | method | seeds | class mass - chance, mean over rounds | verdict |", "|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if "class_mass_excess" in row and not row["aligned"]:
            groups.setdefault((row["dataset"], row["method"]), []).append(row["class_mass_excess"])
    for (dataset, method), excess in groups.items():
        error = float(np.std(excess, ddof=1) / np.sqrt(len(excess))) if len(excess) > 1 else float("nan")
        lines.append(f"| {dataset} | {method} | {len(excess)} | {np.mean(excess):+.3f} ± {error:.3f} | "
                     f"{paired_call(float(np.mean(excess)), error, len(excess))} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def raw_table(rows: list[dict[str, Any]], methods: tuple[str, ...] = ("local-only", "otm")) -> str:
    """Whether training beats the anchor: each trained method's purity and ACC against raw k-means of
    the same seed (unaligned), the paired difference (mean ± standard error) and its verdict."""
    lines = ["| dataset | method | seeds | purity - raw k-means (paired) | verdict | ACC - raw k-means (paired) | verdict |",
             "|---|---|---|---|---|---|---|"]
    for dataset in DATASETS:
        for method in methods:
            cells = []
            for score in ("purity", "acc"):
                difference = paired_difference(rows, dataset, score, method, "raw-kmeans")
                if difference is None:
                    break
                cells += [f"{difference[0]:+.4f} ± {difference[1]:.4f}", paired_call(*difference)]
            if cells:
                lines.append(f"| {dataset} | {method} | {difference[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def goals_table(rows: list[dict[str, Any]], method: str = "otm") -> str:
    """The method against its references, unaligned: ACC against the paper's number, purity and ACC
    against raw k-means (the anchor under the scenario's normalisation), and the paired difference
    to local-only per seed (mean ± standard error; "clearly above" = more than two standard errors)."""
    lines = [f"| dataset | {method} ACC | paper | raw k-means purity / ACC | {method} purity / ACC | "
             f"{method} - local-only ACC (paired) | fused ACC: {method} / local-only / raw |",
             "|---|---|---|---|---|---|---|"]

    def mean(name: str, score: str, dataset: str) -> float | None:
        values = [r[score] for r in rows if r["dataset"] == dataset and r["method"] == name and not r["aligned"]]
        return float(np.mean(values)) if values else None

    for dataset in DATASETS:
        acc = [r["acc"] for r in rows if r["dataset"] == dataset and r["method"] == method and not r["aligned"]]
        if not acc:
            continue
        paper = PAPER_UNALIGNED.get(dataset)
        raw = (mean("raw-kmeans", "purity", dataset), mean("raw-kmeans", "acc", dataset))
        own = (mean(method, "purity", dataset), mean(method, "acc", dataset))
        difference = paired_difference(rows, dataset, "acc", method, "local-only")
        cells = [dataset, mean_std(acc),
                 "-" if paper is None else f"{paper:.4f} ({verdict(np.mean(acc) >= paper)})",
                 "-" if raw[0] is None else f"{raw[0]:.4f} / {raw[1]:.4f}",
                 f"{own[0]:.4f} / {own[1]:.4f}" + ("" if raw[0] is None else
                                                   f" ({verdict(own[0] > raw[0])} / {verdict(own[1] > raw[1])})"),
                 "-" if difference is None else
                 f"{difference[0]:+.4f} ± {difference[1]:.4f} ({difference[2]} seeds, {paired_call(*difference)})",
                 " / ".join("-" if value is None else f"{value:.4f}"
                            for value in (mean(method, "fused_acc", dataset), mean("local-only", "fused_acc", dataset),
                                          mean("raw-kmeans", "fused_acc", dataset)))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"one seed, {QUICK_ROUNDS} rounds")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--settings", default=",".join(SETTINGS), help="unaligned, aligned or both")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds: F..F+S-1")
    parser.add_argument("--first-seed", type=int, default=0, help="F (add seeds to an earlier grid)")
    parser.add_argument("--rounds", type=int, help="override every scenario's rounds")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--runs-dir", help="where run folders go (default a new runs/clustering-YYYYmmdd-HHMMSS-MICROSECONDS)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (repeatable), e.g. neighbour-weight=1")
    parser.add_argument("--table", metavar="JSON[,JSON...]",
                        help="only print the tables of rows written earlier; a later file's "
                             "run of the same data set, method, setting and seed replaces an earlier one's")
    parser.add_argument("--collect", metavar="RUNS_DIR",
                        help="only gather the rows of the finished runs in RUNS_DIR (an interrupted grid)")
    args = parser.parse_args(argv)
    if args.table:
        rows = latest_rows([row for path in args.table.split(",") for row in json.loads(Path(path).read_text())])
        print("\n\n".join(filter(None, (markdown_table(rows), goals_table(rows), raw_table(rows),
                                          paired_table(rows), alignment_table(rows)))))
        return 0
    if args.collect:
        rows = [row_from_run(run) for run in sorted(Path(args.collect).iterdir()) if (run / SUMMARY_FILE).is_file()]
        if args.json:
            write_json(args.json, rows)
        print(markdown_table(rows))
        return 0
    datasets, methods = args.datasets.split(","), args.methods.split(",")
    settings = args.settings.split(",")
    for name, given, known in (("dataset", datasets, DATASETS), ("method", methods, METHODS),
                               ("setting", settings, SETTINGS)):
        unknown = sorted(item for item in set(given) - set(known) if not (name == "dataset" and item.endswith(".toml")))
        if unknown:
            parser.error(f"unknown {name} {unknown}; known: {', '.join(known)}"
                         + (", or a scenario file PATH.toml" if name == "dataset" else ""))
    overrides = dict(item.partition("=")[::2] for item in args.set)
    try:
        resolve_config("synthetic", overrides)
    except ConfigError as error:
        parser.error(f"--set: {error}")
    seeds = 1 if args.quick else args.seeds
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else None)
    runs_dir = Path(args.runs_dir).resolve() if args.runs_dir else new_folder("runs", "clustering").resolve()
    jobs = [(dataset, method, SETTINGS[setting], seed, rounds, args.data_dir, runs_dir, overrides)
            for dataset in datasets for method in methods for setting in settings
            for seed in range(args.first_seed, args.first_seed + seeds)
            if not (METHODS[method] is None and setting != settings[0])]  # raw k-means does not train
    started = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(run_one, jobs):
            rows.append(row)
            if args.json:  # after every run, so an interrupted grid keeps what it finished
                write_json(args.json, rows)
            print(f"{row['dataset']:<12} {row['method']:<14} {'aligned' if row['aligned'] else 'unaligned':<9} "
                  f"seed {row['seed']}  purity {row['purity']:.4f}  acc {row['acc']:.4f}  "
                  f"fused acc {row['fused_acc']:.4f}  {row.get('seconds', 0.0):5.1f} s", flush=True)
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s; final round of "
          f"{'each scenario file' if rounds is None else rounds} rounds\n")
    print("\n\n".join(filter(None, (markdown_table(rows), goals_table(rows), raw_table(rows),
                                      paired_table(rows), alignment_table(rows)))))
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
