"""Plots from run folders: scores per round per run, and t-SNE of the final fused codes.

    python benchmarks/plots.py RUN_DIR [RUN_DIR ...] [--out DIR]

Writes into DIR (default ``plots/``):

* ``scores-per-round.png``: per run, the mean per-modality ACC, the fused ACC and (OTM runs in
  simulation) the plan mass on true counterparts, per evaluated round;
* ``tsne.png``: per run that saved its final evaluation codes (``eval-codes.npz``, written with
  ``fused-eval``), a t-SNE of the concatenated codes coloured by label; give an unaligned and an
  aligned run side by side for the paper's Figure 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otm_fed.results import EVAL_CODES_FILE, read_rounds  # noqa: E402


def run_label(run_dir: Path) -> str:
    return run_dir.name


def plot_scores(run_dirs: list[Path], path: Path) -> None:
    panels = (("acc", "ACC (mean over modalities)"), ("fused_acc", "fused ACC (concatenated codes)"),
              ("true_mass", "plan mass on true counterpart"))
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
    for index, run_dir in enumerate(run_dirs):
        rows = read_rounds(run_dir)
        color = f"C{index % 10}"
        for axis, (key, _) in zip(axes, panels):
            if key == "true_mass":
                points = [(r["round"], r["alignment"]["true_mass"]) for r in rows if "alignment" in r]
            else:
                points = [(r["round"], r["eval"][key]) for r in rows if key in r.get("eval", {})]
            if points:
                axis.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, color=color,
                          label=run_label(run_dir))
    for axis, (_, title) in zip(axes, panels):
        axis.set_title(title)
        axis.set_xlabel("round")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_tsne(run_dirs: list[Path], path: Path, seed: int = 0) -> bool:
    runs = [run_dir for run_dir in run_dirs if (run_dir / EVAL_CODES_FILE).is_file()]
    if not runs:
        return False
    figure, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 5), squeeze=False)
    for axis, run_dir in zip(axes[0], runs):
        arrays = np.load(run_dir / EVAL_CODES_FILE)
        codes = np.concatenate([arrays[name] for name in sorted(arrays.files) if name.startswith("codes-")], axis=1)
        embedded = TSNE(n_components=2, init="pca", random_state=seed,
                        perplexity=min(30.0, (len(codes) - 1) / 3)).fit_transform(codes)
        summary = json.loads((run_dir / "summary.json").read_text())["final"]
        axis.scatter(*embedded.T, c=arrays["labels"], cmap="tab20", s=6)
        axis.set_title(f"{run_label(run_dir)}\nfused ACC {summary['fused_acc']:.3f}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scores per round and t-SNE plots from run folders")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("plots"))
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "metrics.jsonl").is_file()]
    if missing:
        parser.error(f"not run folders (no metrics.jsonl): {', '.join(missing)}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot_scores(args.runs, args.out / "scores-per-round.png")
    written = ["scores-per-round.png"] + (["tsne.png"] if plot_tsne(args.runs, args.out / "tsne.png") else [])
    print(f"wrote {', '.join(str(args.out / name) for name in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
