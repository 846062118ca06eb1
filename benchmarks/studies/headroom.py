"""How much could another modality teach an agent? Each view's labelled ceiling beside its clustering.

    python benchmarks/studies/headroom.py [--datasets synthetic,orl,...] [--runs clustering.json] [--seeds 0,1] [--json PATH]

Per view, the 5-fold cross-validated accuracy of a logistic regression on the normalised raw view
(the labels are used, so this is an upper reference, not a method): what a linear read-out of the
agent's own input can reach. Beside it, with ``--runs`` (a ``benchmarks/clustering.py`` JSON), the
local-only agents' k-means ACC per view (mean over seeds). Mixing can only move an agent's codes
within what its own input encodes, so the gap ceiling - local-only bounds what OTM can add to that
agent's clustering; where it is small, OTM can at best tie (docs/findings/alignment-and-gate.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from otm_fed.results import write_json  # noqa: E402
from otm_fed.scenario import normalised_views, seeded_draws  # noqa: E402
from local_training import seed_list  # noqa: E402

DATASETS = ("synthetic", "orl", "movies", "prokaryotic", "handwritten")
FOLDS = 5


def linear_ceiling(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Mean accuracy of a logistic regression over stratified folds (seeded)."""
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    return float(cross_val_score(LogisticRegression(max_iter=500), x, labels, cv=folds).mean())


def view_ceilings(dataset: str, seeds: list[int]) -> list[float]:
    """The linear ceiling of each view of a scenario, normalised as its agents normalise it: the
    mean over the draws of ``seeds`` (``seeded_draws``: a data file is read once)."""
    return np.mean([[linear_ceiling(view, data.labels) for view in normalised_views(config, data)]
                    for _, config, data in seeded_draws(dataset, seeds)], axis=0).tolist()


def local_only_acc(rows: list[dict], dataset: str) -> list[float] | None:
    """Mean over seeds of the local-only agents' ACC per view, from clustering rows."""
    per_view = [row["acc_per_modality"] for row in rows if row["dataset"] == dataset and row["method"] == "local-only"]
    return np.mean(per_view, axis=0).tolist() if per_view else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--runs", type=Path, help="a benchmarks/clustering.py JSON with local-only rows")
    parser.add_argument("--seeds", type=seed_list, default="0", help="the synthetic draws the ceiling is averaged over")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.runs is not None and not args.runs.is_file():
        parser.error(f"no such file: {args.runs}")
    runs = json.loads(args.runs.read_text()) if args.runs else []
    print("| data set | view | linear ceiling | local-only ACC | headroom |\n|---|---|---|---|---|")
    out = []
    for dataset in args.datasets.split(","):
        ceilings = view_ceilings(dataset, args.seeds)
        local = local_only_acc(runs, dataset)
        for view, ceiling in enumerate(ceilings):
            acc = local[view] if local else None
            out.append({"dataset": dataset, "view": view, "linear_ceiling": ceiling, "local_only_acc": acc})
            cells = (f"{acc:.3f} | {ceiling - acc:+.3f}" if acc is not None else "- | -")
            print(f"| {dataset} | {view} | {ceiling:.3f} | {cells} |", flush=True)
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
