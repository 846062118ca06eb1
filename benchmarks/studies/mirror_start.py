"""Does starting the frame fit from the mirror -Q of the chosen frame find better fits, and better plans?

    python benchmarks/studies/mirror_start.py RUN_DIR/eval-codes.npz [RUN_DIR/eval-codes.npz ...]
        [--batch 256] [--trials 3] [--json PATH]

For each run's final codes and independent random batches of every modality (as agents draw
them), fits each modality's frame to the reference's as ``otm_fed.frames.fit_rotation`` does
in a search round (from I and from the winner of the GW-start search, the lower W kept), once
without and once with the mirror start (the fit from -Q of that winner, kept when its W is
lower), and prints per modality the W of both and the class mass above chance of the exact OT
plan each ends on. Labels score only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from otm_fed.config import DEFAULTS  # noqa: E402
from otm_fed.frames import searched_rotation, standardise, wasserstein_procrustes  # noqa: E402
from otm_fed.results import write_json  # noqa: E402
from otm_fed.transport import exact_ot_vertex, squared_distances, uniform  # noqa: E402


def class_mass_above_chance(x: np.ndarray, y: np.ndarray, rotation: np.ndarray, labels_x: np.ndarray,
                            labels_y: np.ndarray) -> float:
    """Mass of the exact OT plan between x Q and y on same-class pairs, minus sum_c p_c q_c."""
    (rows, cols, values), _ = exact_ot_vertex(squared_distances(x @ rotation, y), uniform(len(x)), uniform(len(y)))
    classes = np.union1d(labels_x, labels_y)
    chance = sum(np.mean(labels_x == c) * np.mean(labels_y == c) for c in classes)
    return float(values[labels_x[rows] == labels_y[cols]].sum() - chance)


def run_rows(path: Path, batch: int, trials: int) -> list[dict]:
    with np.load(path) as saved:
        labels = saved["labels"]
        codes = [saved[f"codes-{m}"].astype(np.float64) for m in range(sum(k.startswith("codes-") for k in saved.files))]
    rows = []
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        ids = [np.sort(rng.choice(len(labels), min(batch, len(labels)), replace=False)) for _ in codes]
        scaled = [(z[i] - standardise(z[i])[0]) / standardise(z[i])[1] for z, i in zip(codes, ids)]
        for m in range(1, len(codes)):
            x, y = scaled[m], scaled[0]
            starts = [np.eye(x.shape[1]), searched_rotation(x, y, DEFAULTS["align-starts"], rng)]
            without = min((wasserstein_procrustes(x, y, start) for start in starts), key=lambda fit: fit[1])
            mirrored = wasserstein_procrustes(x, y, -without[0])
            with_mirror = min(without, mirrored, key=lambda fit: fit[1])
            row = {"codes": str(path), "trial": trial, "modality": m, "w_without": without[1], "w_with": with_mirror[1],
                   "mass_without": class_mass_above_chance(x, y, without[0], labels[ids[m]], labels[ids[0]]),
                   "mass_with": class_mass_above_chance(x, y, with_mirror[0], labels[ids[m]], labels[ids[0]])}
            rows.append(row)
            print(f"{path.parent.name} trial {trial} modality {m}: W {row['w_without']:.4f} -> {row['w_with']:.4f}, "
                  f"class mass above chance {row['mass_without']:+.3f} -> {row['mass_with']:+.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codes", type=Path, nargs="+", help="runs' eval-codes.npz (codes-0..M-1 in file order, labels)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    missing = [str(path) for path in args.codes if not path.is_file()]
    if missing:
        parser.error(f"no such codes file: {', '.join(missing)}")
    rows = [row for path in args.codes for row in run_rows(path, args.batch, args.trials)]
    changed = [row for row in rows if row["w_with"] < row["w_without"]]
    print(f"\n{len(changed)} of {len(rows)} fits moved to the mirror's basin; class mass above chance, mean: "
          f"{np.mean([r['mass_without'] for r in rows]):+.3f} without, {np.mean([r['mass_with'] for r in rows]):+.3f} "
          f"with the mirror start")
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
