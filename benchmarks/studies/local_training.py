"""Local training alone: does one agent's WAE, trained on its own view only, give codes
that k-means clusters at least as well as the raw normalised view?

No server and no Flower: each agent is the ``ModalityAgent`` the federation uses, trained with
TRAIN instructions without a mix (exactly the local-only strategy's rounds), for the scenario's
rounds; the final codes are scored by seeded k-means against the view's labels. Each variant is a
set of config overrides on top of the scenario, so the frozen defaults are one variant among others.
One key is the benchmark's own, not a config key: ``neighbour-refresh:F`` finds the neighbour
term's k-NN graph again, at round F x rounds, from the agent's own codes instead of its raw view
(a refuted study, docs/findings/local-training.md).

    python benchmarks/studies/local_training.py [--datasets orl,...] [--variants NAME=KEY:VALUE;KEY:VALUE,...]
        [--seeds 0,1] [--json PATH]
    python benchmarks/studies/local_training.py --table PATH

Prints per view the raw k-means ACC and each variant's ACC (mean over seeds) and writes the rows
``{"dataset", "variant", "seed", "view", "acc", "purity", "raw_acc", "raw_purity", "seconds"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from otm_fed.config import resolve_config  # noqa: E402
from otm_fed.metrics import kmeans_scores  # noqa: E402
from otm_fed.results import write_json  # noqa: E402
from otm_fed.scenario import modality_data, scenario_dataset  # noqa: E402

DATASETS = ("synthetic", "orl", "movies", "prokaryotic", "handwritten")
# The variants that chose the defaults (docs/findings/local-training.md): the paper's WAE, then each
# change in turn, then the default; then two refuted ones, more neighbours and the graph found again
# from the codes. The kernel's degrees of freedom and the structure term were measured as keys of
# commit d78650e (neighbour-dof, structure-weight), refuted and removed.
VARIANTS: dict[str, dict[str, str]] = {
    "paper-wae": {"reconstruction": "squared", "neighbour-weight": "0", "epochs": "0"},
    "cosine": {"neighbour-weight": "0", "epochs": "0"},
    **{f"neighbour-{w}": {"neighbour-weight": w, "epochs": "0"} for w in ("0.03", "0.1", "0.3", "1")},
    "default": {},
    **{f"k{k}": {"neighbours": k} for k in ("20", "40")},
    "refresh-half": {"neighbour-refresh": "0.5"},
}
REFRESH = "neighbour-refresh"


def seed_list(text: str) -> list[int]:
    """``--seeds`` as comma-separated integers (an argparse type: a bad list is a usage error)."""
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def rows_file(text: str) -> Path:
    """``--table``: a rows JSON written earlier (an argparse type: a missing file is a usage error)."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such rows file: {text}")
    return Path(text)


def parse_variants(text: str) -> dict[str, dict[str, str]]:
    """``NAME`` (a known variant) or ``NAME=KEY:VALUE;KEY:VALUE``, comma-separated."""
    variants = {}
    for item in filter(None, text.split(",")):
        name, _, settings = item.partition("=")
        if not settings:
            if name not in VARIANTS:
                raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)} or NAME=KEY:VALUE;...")
            variants[name] = VARIANTS[name]
        else:
            pairs = settings.split(";")
            if not all(":" in pair for pair in pairs):
                raise SystemExit(f"variant {name!r}: settings must be KEY:VALUE;KEY:VALUE, got {settings!r}")
            variants[name] = dict(pair.split(":", 1) for pair in pairs)
    for name, settings in variants.items():
        try:
            valid = REFRESH not in settings or 0 < float(settings[REFRESH]) <= 1
        except ValueError:
            valid = False
        if not valid:
            raise SystemExit(f"variant {name!r}: {REFRESH} must be a fraction of the run in (0, 1], got {settings[REFRESH]!r}")
    return variants


def view_rows(dataset: str, variant: str, overrides: dict[str, str], seed: int) -> list[dict[str, Any]]:
    """Every view of one data set trained alone under one variant and seed."""
    from otm_fed.agent import ModalityAgent, nearest_neighbours
    from otm_fed.protocol import TrainInstruction

    refresh = overrides.get(REFRESH)
    config = resolve_config(dataset, {**{k: v for k, v in overrides.items() if k != REFRESH}, "seed": str(seed)})
    refresh_round = max(2, round(float(refresh) * config["rounds"])) if refresh else 0
    rows = []
    for modality in range(scenario_dataset(config).n_views):
        data = modality_data(config, modality)
        raw = kmeans_scores(data.evaluation, data.labels, data.n_classes, config["kmeans-init"], seed)
        started = time.perf_counter()
        agent = ModalityAgent(modality, data, config)
        for round_number in range(1, config["rounds"] + 1):
            if round_number == refresh_round and agent.neighbours is not None:
                agent.neighbours = nearest_neighbours(agent.encode(data.train), agent.neighbours.shape[1]).astype(np.int32)
            agent.train(TrainInstruction(round_number, config["batch-size"], seed))
        scores, _ = agent.evaluate(data.n_classes, config["kmeans-init"], seed)
        rows.append({"dataset": Path(dataset).stem, "variant": variant, "seed": seed, "view": modality,
                     "acc": scores["acc"], "purity": scores["purity"], "raw_acc": raw["acc"],
                     "raw_purity": raw["purity"], "seconds": time.perf_counter() - started})
        print(f"{Path(dataset).stem:12s} {variant:14s} seed {seed} view {modality}  acc {scores['acc']:.3f} "
              f"(raw {raw['acc']:.3f})  purity {scores['purity']:.3f} (raw {raw['purity']:.3f})", flush=True)
    return rows


def table(rows: list[dict[str, Any]], score: str = "acc") -> str:
    """Per (data set, view): raw k-means and each variant, mean over seeds; a last line per data
    set with the mean over views."""
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    lines = [f"| data set | view | raw k-means | {' | '.join(variants)} |", "|---|---|---|" + "---|" * len(variants)]
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        views = sorted({row["view"] for row in rows if row["dataset"] == dataset})
        for view in [*views, "mean"]:
            picked = [row for row in rows if row["dataset"] == dataset and (view == "mean" or row["view"] == view)]
            raw = np.mean([row[f"raw_{score}"] for row in picked])
            cells = [[row[score] for row in picked if row["variant"] == v] for v in variants]
            lines.append(f"| {dataset} | {view} | {raw:.3f} | "
                         + " | ".join(f"{np.mean(c):.3f}" if c else "-" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="names or scenario .toml paths")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=seed_list, default="0,1")
    parser.add_argument("--json", default="", help="write the rows here")
    parser.add_argument("--table", type=rows_file, help="only print the tables of rows written earlier")
    args = parser.parse_args(argv)
    if args.table:
        rows = json.loads(args.table.read_text())
    else:
        import torch

        torch.set_num_threads(1)
        rows = [row for dataset in filter(None, args.datasets.split(","))
                for variant, overrides in parse_variants(args.variants).items()
                for seed in args.seeds
                for row in view_rows(dataset, variant, overrides, seed)]
        if args.json:
            write_json(args.json, rows)
    print("\nACC\n" + table(rows, "acc") + "\n\npurity\n" + table(rows, "purity"))


if __name__ == "__main__":
    main()
