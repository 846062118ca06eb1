"""The gate's confidence against the class mass it should predict, on a run's final codes.

    python benchmarks/frame_confidence.py RUN_DIR/eval-codes.npz [RUN_DIR/eval-codes.npz ...]
        [--batch 128] [--trials 3] [--json PATH]

For each run's final codes and independent random batches of every modality (as agents draw
them), aligns the frames
(``otm_fed.frames.align_frames``, round-1 search), mixes the codes as the default strategy does and
as the paper does, and prints per trial each modality's confidence and, per modality pair, the
plans' class mass (mass on same-class pairs; chance = sum_c p_c q_c). The labels score only.
Run on local-only runs (codes that were never mixed), this is how ``gate-threshold`` was chosen
(docs/alignment.md); the last lines give each run's mean confidence per modality over the trials.
"""

from __future__ import annotations

import argparse
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otm_fed.alignment import pair_plan  # noqa: E402
from otm_fed.config import DEFAULTS  # noqa: E402
from otm_fed.frames import align_frames  # noqa: E402
from otm_fed.mixer import OTMixer  # noqa: E402
from otm_fed.results import write_json  # noqa: E402


def class_mass(plans: list[np.ndarray], labels: list[np.ndarray]) -> list[float]:
    """Per pair (a < b): the mass of N_a T_a^T diag(1/mu_B) T_b between same-class samples."""
    return [float((pair_plan(plans[a], plans[b]) * (labels[a][:, None] == labels[b][None, :])).sum() / len(labels[a]))
            for a, b in combinations(range(len(plans)), 2)]


def chance(labels: list[np.ndarray], n_classes: int) -> list[float]:
    shares = [np.bincount(y, minlength=n_classes) / len(y) for y in labels]
    return [float(shares[a] @ shares[b]) for a, b in combinations(range(len(labels)), 2)]


def run_rows(path: Path, batch: int, trials: int, mixer: OTMixer) -> list[dict]:
    """One row per trial: confidences per modality and class mass per modality pair."""
    with np.load(path) as saved:
        labels = saved["labels"]
        codes = [saved[f"codes-{m}"].astype(np.float64) for m in range(sum(k.startswith("codes-") for k in saved.files))]
    rows = []
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        ids = [np.sort(rng.choice(len(labels), min(batch, len(labels)), replace=False)) for _ in codes]
        batch_codes = {m: z[ids[m]] for m, z in enumerate(codes)}
        alignment = align_frames(batch_codes, {}, DEFAULTS["align-starts"], rng)
        aligned = mixer([alignment.frames[m].to_common(z) for m, z in batch_codes.items()], trial)
        paper = mixer(list(batch_codes.values()), trial)
        batch_labels = [labels[i] for i in ids]
        row = {"codes": str(path), "trial": trial, "confidence": list(alignment.confidences.values()),
               "class_mass_aligned": class_mass(aligned.transport_plans, batch_labels),
               "class_mass_paper": class_mass(paper.transport_plans, batch_labels),
               "class_mass_chance": chance(batch_labels, int(labels.max()) + 1)}
        rows.append(row)
        print(f"{path} trial {trial}: confidence {np.round(row['confidence'], 3).tolist()}  class mass per pair: "
              f"aligned {np.round(row['class_mass_aligned'], 3).tolist()}, paper "
              f"{np.round(row['class_mass_paper'], 3).tolist()}, chance {np.round(row['class_mass_chance'], 3).tolist()}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codes", type=Path, nargs="+", help="runs' eval-codes.npz (codes-0..M-1 in file order, labels)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    missing = [str(path) for path in args.codes if not path.is_file()]
    if missing:
        parser.error(f"no such codes file: {', '.join(missing)}")
    mixer = OTMixer(alpha=DEFAULTS["alpha"], max_outer=2)
    rows = []
    for path in args.codes:
        rows += run_rows(path, args.batch, args.trials, mixer)
    for path in args.codes:
        mean = np.mean([row["confidence"] for row in rows if row["codes"] == str(path)], axis=0)
        print(f"{path}: mean confidence per modality {np.round(mean, 3).tolist()}")
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
