"""Per-modality code diagnostics of finished runs: scale, effective dimension, k-means scores.

    python benchmarks/studies/codes.py RUN_DIR [RUN_DIR ...] [--json PATH]

Reads each run's final evaluation codes (``eval-codes.npz``, written in simulation with
``fused-eval``) and prints, per modality, the codes' RMS norm and effective dimension
(``otm_fed.metrics.code_spread``) next to k-means purity and ACC on them: whether the mix
changed a modality's scale or flattened its codes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from otm_fed.metrics import code_spread, kmeans_scores  # noqa: E402
from otm_fed.results import EVAL_CODES_FILE, write_json  # noqa: E402


def code_rows(run_dir: Path, kmeans_init: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """One row per modality of the run's final evaluation codes."""
    path = run_dir / EVAL_CODES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run in simulation with fused-eval = true")
    arrays = np.load(path)
    labels = arrays["labels"]
    modalities = sorted(int(name.removeprefix("codes-")) for name in arrays.files if name.startswith("codes-"))
    rows = []
    for modality in modalities:
        codes = arrays[f"codes-{modality}"]
        scores = kmeans_scores(codes, labels, len(np.unique(labels)), kmeans_init, seed)
        rows.append({"run": run_dir.name, "modality": modality, **code_spread(codes),
                     "purity": scores["purity"], "acc": scores["acc"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    try:
        rows = [row for run_dir in args.runs for row in code_rows(run_dir)]
    except FileNotFoundError as error:
        parser.error(str(error))
    print("| run | modality | RMS norm | effective dimension | purity | ACC |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['modality']} | {row['rms_norm']:.2f} | {row['effective_dimension']:.2f} | "
              f"{row['purity']:.3f} | {row['acc']:.3f} |")
    if args.json:
        write_json(args.json, rows)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
