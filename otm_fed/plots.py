"""Plots of run folders: scores and losses per round, and a t-SNE of the final fused codes.

``plot_runs`` writes, into one folder:

* ``scores-per-round.png``: per run, the mean per-modality ACC, the fused ACC and (OTM runs in
  simulation) the plan mass on true counterparts, at each evaluated round;
* ``losses-per-round.png``: per run and modality, each loss term of eq. 6 (reconstruction,
  latent matching, ..., total) at every trained round;
* ``gate-per-round.png``: per OTM run with frame alignment, each modality's label-free confidence
  per round against the gate's threshold, filled where the modality mixed (docs/alignment.md);
* ``tsne.png``: per run that saved its final evaluation codes (``eval-codes.npz``, written with
  ``fused-eval`` in simulation), a t-SNE of the concatenated codes coloured by label; an
  unaligned and an aligned run side by side give the paper's Figure 2.

matplotlib and scikit-learn's t-SNE are imported only when a plot is drawn, so nothing that
imports ``otm_fed`` (an agent, the server) pays for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from otm_fed.config import DEFAULTS, gate_thresholds, load_scenario
from otm_fed.results import CONFIG_FILE, EVAL_CODES_FILE, METRICS_FILE, read_rounds, read_summary

SCORES_PLOT, LOSSES_PLOT, TSNE_PLOT = "scores-per-round.png", "losses-per-round.png", "tsne.png"
GATE_PLOT = "gate-per-round.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)


def plot_scores(run_dirs: list[Path], path: Path) -> None:
    plt = _pyplot()
    panels = (("acc", "ACC (mean over modalities)"), ("fused_acc", "fused ACC (concatenated codes)"),
              ("true_mass", "plan mass on true counterpart"))
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
    for index, run_dir in enumerate(run_dirs):
        rows = read_rounds(run_dir)
        for axis, (key, _) in zip(axes, panels):
            if key == "true_mass":
                points = [(r["round"], r["alignment"]["true_mass"]) for r in rows if "alignment" in r]
            else:
                points = [(r["round"], r["eval"][key]) for r in rows if key in r.get("eval", {})]
            if points:
                axis.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3,
                          color=f"C{index % 10}", label=run_dir.name)
    for axis, (_, title) in zip(axes, panels):
        axis.set(title=title, xlabel="round")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(figure, path)


def plot_losses(run_dirs: list[Path], path: Path) -> None:
    """One panel per loss term; a colour per run, a line style per modality."""
    plt = _pyplot()
    rows = {run_dir: read_rounds(run_dir) for run_dir in run_dirs}
    terms = list(dict.fromkeys(term for run_rows in rows.values() for row in run_rows
                               for losses in row.get("losses", {}).values() for term in losses))
    figure, axes = plt.subplots(1, max(len(terms), 1), figsize=(5 * max(len(terms), 1), 4.2), squeeze=False)
    for index, (run_dir, run_rows) in enumerate(rows.items()):
        modalities = sorted({m for row in run_rows for m in row.get("losses", {})}, key=int)
        for axis, term in zip(axes[0], terms):
            for style, modality in zip(("-", "--", ":", "-."), modalities):
                points = [(r["round"], r["losses"][modality][term]) for r in run_rows
                          if term in r.get("losses", {}).get(modality, {})]
                if points:
                    axis.plot(*zip(*points), style, color=f"C{index % 10}", label=f"{run_dir.name} m{modality}")
    for axis, term in zip(axes[0], terms):
        axis.set(title=f"{term.replace('_', ' ')} loss (mean per sample)", xlabel="round")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    _save(figure, path)


def gate_series(row: dict, name: str) -> dict[str, float]:
    """Modality -> this round's reading ``name`` of a metrics row with frames (``"confidence"``
    is also kept for the reference, and by runs made before readings were logged)."""
    frames = row["frames"]
    if name == "confidence" and "confidence" in frames:
        return frames["confidence"]
    return {m: values[name] for m, values in frames.get("readings", {}).items() if name in values}


def plot_gate(run_dirs: list[Path], path: Path) -> bool:
    """One panel per run with frames: each modality's gate statistics per round (one line style
    per statistic, filled markers where it mixed) and the run's thresholds; False (nothing
    written) when no run aligned frames."""
    framed_rows = {run_dir: [row for row in read_rounds(run_dir) if "frames" in row] for run_dir in run_dirs}
    runs = {run_dir: rows for run_dir, rows in framed_rows.items() if rows}
    if not runs:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.2), squeeze=False)
    for axis, (run_dir, framed) in zip(axes[0], runs.items()):
        saved = run_dir / CONFIG_FILE
        thresholds = gate_thresholds({**DEFAULTS, **load_scenario(str(saved))}) if saved.is_file() else {}
        for style, name in zip(("-", "--", ":"), thresholds or {"confidence": 0.0}):
            series = [(row, gate_series(row, name)) for row in framed]
            modalities = sorted({m for _, values in series for m in values}, key=int)
            for index, modality in enumerate(modalities):
                points = [(row["round"], values[modality], int(modality) in row["frames"]["mixed"])
                          for row, values in series if modality in values]
                rounds, values, mixed = zip(*points)
                colour = f"C{index % 10}"
                axis.plot(rounds, values, color=colour, linestyle=style, linewidth=1, label=f"m{modality} {name}")
                axis.scatter([r for r, m in zip(rounds, mixed) if m], [v for v, m in zip(values, mixed) if m],
                             color=colour, s=10)
            if thresholds:
                axis.axhline(thresholds[name], color="grey", linestyle=style, linewidth=1, label=f"{name} threshold")
        axis.set(title=f"{run_dir.name}: gate statistics (dots: mixed)", xlabel="round")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    _save(figure, path)
    return True


def plot_tsne(run_dirs: list[Path], path: Path, seed: int = 0) -> bool:
    """The t-SNE panel of each run that saved its codes; False (nothing written) when none did."""
    runs = [run_dir for run_dir in run_dirs if (run_dir / EVAL_CODES_FILE).is_file()]
    if not runs:
        return False
    from sklearn.manifold import TSNE

    figure, axes = _pyplot().subplots(1, len(runs), figsize=(5.5 * len(runs), 5), squeeze=False)
    for axis, run_dir in zip(axes[0], runs):
        arrays = np.load(run_dir / EVAL_CODES_FILE)
        codes = np.concatenate([arrays[name] for name in sorted(arrays.files) if name.startswith("codes-")], axis=1)
        embedded = TSNE(n_components=2, init="pca", random_state=seed,
                        perplexity=min(30.0, (len(codes) - 1) / 3)).fit_transform(codes)
        final = (read_summary(run_dir) or {"final": {}})["final"]
        axis.scatter(*embedded.T, c=arrays["labels"], cmap="tab20", s=6)
        axis.set_title(f"{run_dir.name}\nfused ACC {final.get('fused_acc', float('nan')):.3f}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    _save(figure, path)
    return True


def plot_runs(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Every plot of ``run_dirs`` into ``out_dir``; returns the files written."""
    missing = [str(run) for run in run_dirs if not (run / METRICS_FILE).is_file()]
    if missing:
        raise ValueError(f"not run folders (no {METRICS_FILE}): {', '.join(missing)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_scores(run_dirs, out_dir / SCORES_PLOT)
    plot_losses(run_dirs, out_dir / LOSSES_PLOT)
    written = [out_dir / SCORES_PLOT, out_dir / LOSSES_PLOT]
    written += [out_dir / GATE_PLOT] if plot_gate(run_dirs, out_dir / GATE_PLOT) else []
    return written + ([out_dir / TSNE_PLOT] if plot_tsne(run_dirs, out_dir / TSNE_PLOT) else [])
