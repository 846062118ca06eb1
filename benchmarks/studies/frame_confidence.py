"""The gate's confidence against the class mass it should predict, on a run's final codes.

    python benchmarks/studies/frame_confidence.py RUN_DIR/eval-codes.npz [RUN_DIR/eval-codes.npz ...]
        [--batch 128] [--trials 3] [--pairs] [--anchors K] [--json PATH]

For each run's final codes and independent random batches of every modality (as agents draw
them), aligns the frames (``otm_fed.frames.align_frames``, round-1 search), mixes the codes as
the default strategy does and as the paper does, and prints per trial each modality's confidence and, per modality pair, the
plans' class mass (mass on same-class pairs; chance = sum_c p_c q_c). The labels score only.
Run on local-only runs (codes that were never mixed), this is how ``gate-threshold`` was chosen
(docs/findings/alignment-and-gate.md); the last lines give, per run and modality, the mean over trials of its
confidence and of the class mass of the plan it judges (phi_m(Z_m) to the reference). With
``--anchors K`` each trial also draws K anchor samples (the saved codes are in sample order, so
their rows correspond across modalities): the frames start from them and the confidence is
``anchor_confidence``, as in a run with ``anchors = K``.
"""

from __future__ import annotations

import argparse
import sys
from itertools import combinations, permutations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from otm_fed.alignment import pair_plan  # noqa: E402
from otm_fed.config import DEFAULTS  # noqa: E402
from otm_fed.frames import align_frames  # noqa: E402
from otm_fed.mixer import OTMixer  # noqa: E402
from otm_fed.transport import exact_ot_vertex, squared_distances, uniform  # noqa: E402
from otm_fed.results import write_json  # noqa: E402


def class_mass(plans: list[np.ndarray], labels: list[np.ndarray]) -> list[float]:
    """Per pair (a < b): the mass of N_a T_a^T diag(1/mu_B) T_b between same-class samples."""
    return [float((pair_plan(plans[a], plans[b]) * (labels[a][:, None] == labels[b][None, :])).sum() / len(labels[a]))
            for a, b in combinations(range(len(plans)), 2)]


def chance(labels: list[np.ndarray], n_classes: int) -> list[float]:
    shares = [np.bincount(y, minlength=n_classes) / len(y) for y in labels]
    return [float(shares[a] @ shares[b]) for a, b in combinations(range(len(labels)), 2)]


def run_rows(path: Path, batch: int, trials: int, mixer: OTMixer, pairs: bool = False, n_anchors: int = 0) -> list[dict]:
    """One row per trial: confidences per modality and class mass per modality pair (with
    ``pairs``, also every ordered pair aligned on its own: ``pair_rows``; with ``n_anchors``, the
    frames fitted from that many anchor samples drawn per trial)."""
    with np.load(path) as saved:
        labels = saved["labels"]
        codes = [saved[f"codes-{m}"].astype(np.float64) for m in range(sum(k.startswith("codes-") for k in saved.files))]
    n_classes = int(labels.max()) + 1
    rows = []
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        ids = [np.sort(rng.choice(len(labels), min(batch, len(labels)), replace=False)) for _ in codes]
        batch_codes = {m: z[ids[m]] for m, z in enumerate(codes)}
        anchor_ids = rng.choice(len(labels), n_anchors, replace=False) if n_anchors else None
        anchors = {m: z[anchor_ids] for m, z in enumerate(codes)} if n_anchors else None
        alignment = align_frames(batch_codes, {}, DEFAULTS["align-starts"], rng, anchors=anchors)
        aligned = mixer([alignment.frames[m].to_common(z) for m, z in batch_codes.items()], trial)
        paper = mixer(list(batch_codes.values()), trial)
        batch_labels = [labels[i] for i in ids]
        row = {"codes": str(path), "trial": trial, "anchors": n_anchors, "confidence": list(alignment.confidences.values()),
               "pairs": pair_rows(batch_codes, batch_labels, n_classes, rng) if pairs else [],
               "class_mass_aligned": class_mass(aligned.transport_plans, batch_labels),
               "class_mass_paper": class_mass(paper.transport_plans, batch_labels),
               "class_mass_chance": chance(batch_labels, n_classes),
               "class_mass_frames": frame_class_mass(alignment, batch_codes, batch_labels)}
        rows.append(row)
        print(f"{path} trial {trial}: confidence {np.round(row['confidence'], 3).tolist()}  class mass per pair: "
              f"aligned {np.round(row['class_mass_aligned'], 3).tolist()}, paper "
              f"{np.round(row['class_mass_paper'], 3).tolist()}, chance {np.round(row['class_mass_chance'], 3).tolist()}",
              flush=True)
    return rows


def frame_class_mass(alignment, batch_codes: dict[int, np.ndarray], labels: list[np.ndarray]) -> list[float]:
    """Per modality m but the reference: the class mass of the plan the confidence judges, the
    exact OT plan between phi_m(Z_m) and the reference's codes in the common frame (NaN for the
    reference itself)."""
    reference = alignment.reference
    target = alignment.frames[reference].to_common(batch_codes[reference])
    masses = []
    for m, codes in batch_codes.items():
        if m == reference:
            masses.append(float("nan"))
            continue
        cost = squared_distances(alignment.frames[m].to_common(codes), target)
        (rows, cols, values), _ = exact_ot_vertex(cost, uniform(len(codes)), uniform(len(target)))
        masses.append(float(values[labels[m][rows] == labels[reference][cols]].sum()))
    return masses


def pair_rows(batch_codes: dict[int, np.ndarray], labels: list[np.ndarray], n_classes: int,
              rng: np.random.Generator) -> list[dict]:
    """Every ordered pair (reference r, modality m) aligned alone, m into r's frame: m's confidence
    and the class mass above chance of its plan. Could another reference frame align m?"""
    rows = []
    for r, m in permutations(batch_codes, 2):
        alignment = align_frames({0: batch_codes[r], 1: batch_codes[m]}, {}, DEFAULTS["align-starts"], rng)
        pair_labels = [labels[r], labels[m]]
        mass = frame_class_mass(alignment, {0: batch_codes[r], 1: batch_codes[m]}, pair_labels)[1]
        rows.append({"reference": r, "modality": m, "confidence": alignment.confidences[1],
                     "class_mass_above_chance": mass - chance(pair_labels, n_classes)[0]})
    return rows


def frame_mass_above_chance(row: dict) -> list[float]:
    """A trial's ``class_mass_frames`` minus the chance of the pair (reference 0, m)."""
    pairs = list(combinations(range(len(row["confidence"])), 2))
    return [mass - row["class_mass_chance"][pairs.index((0, m))] if m else float("nan")
            for m, mass in enumerate(row["class_mass_frames"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codes", type=Path, nargs="+", help="runs' eval-codes.npz (codes-0..M-1 in file order, labels)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--pairs", action="store_true", help="also align every ordered pair of modalities alone")
    parser.add_argument("--anchors", type=int, default=0, help="K anchor samples per trial (default 0: none)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.anchors < 0:
        parser.error("--anchors must be at least 0")
    missing = [str(path) for path in args.codes if not path.is_file()]
    if missing:
        parser.error(f"no such codes file: {', '.join(missing)}")
    mixer = OTMixer(alpha=DEFAULTS["alpha"], max_outer=2)
    rows = []
    for path in args.codes:
        rows += run_rows(path, args.batch, args.trials, mixer, args.pairs, args.anchors)
    for path in args.codes:
        own = [row for row in rows if row["codes"] == str(path)]
        confidence = np.mean([row["confidence"] for row in own], axis=0)
        above = np.mean([frame_mass_above_chance(row) for row in own], axis=0)
        print(f"{path}: mean over trials, per modality: confidence {np.round(confidence, 3).tolist()}, "
              f"class mass of its plan to the reference, above chance {np.round(above, 3).tolist()}")
        for pair in (pair for row in own for pair in row["pairs"]):
            print(f"{path}: modality {pair['modality']} into {pair['reference']}'s frame: confidence "
                  f"{pair['confidence']:.3f}, class mass above chance {pair['class_mass_above_chance']:+.3f}")
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
