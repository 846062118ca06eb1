"""Plots of run folders: scores, losses and the gate per round, and a t-SNE of the final fused codes.

``plot_runs`` writes, into one folder:

* ``scores-per-round.png``: per run, ACC, NMI and purity at each evaluated round on 0-1 axes
  (the mean over modalities and, in simulation, the fused codes), and (OTM runs in simulation)
  the share of each sample's plan mass on its true counterpart in the rounds that measured it;
* ``losses-per-round.png``: per run and modality, each loss term of eq. 6 (reconstruction,
  latent matching, ..., total) at every trained round, on a log scale where a panel's values
  span more than two orders of magnitude;
* ``gate-per-round.png``: per OTM run with frame alignment and per statistic its gate reads, each
  gated modality's mean reading over the last ``gate-window`` rounds (what the gate compares to
  its threshold) against the threshold, the per-round reading faintly, the round the modality
  opened and the rounds it mixed (docs/findings/alignment-and-gate.md);
* ``tsne.png``: per run that saved its final evaluation codes (``eval-codes.npz``, written with
  ``fused-eval`` in simulation), a t-SNE of the concatenated codes coloured by true label; an
  unaligned and an aligned run side by side give the paper's Figure 2.

matplotlib and scikit-learn's t-SNE are imported only when a plot is drawn, so nothing that
imports ``otm_fed`` (an agent, the server) pays for them.
"""

from __future__ import annotations

import itertools

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from otm_fed.config import DEFAULTS, gate_thresholds, load_scenario
from otm_fed.results import CONFIG_FILE, EVAL_CODES_FILE, METRICS_FILE, read_rounds, read_summary
from otm_fed.uptake import READINGS as UPTAKE_READINGS

SCORES_PLOT, LOSSES_PLOT, TSNE_PLOT = "scores-per-round.png", "losses-per-round.png", "tsne.png"
GATE_PLOT = "gate-per-round.png"
SCORE_PANELS = (("acc", "ACC"), ("nmi", "NMI"), ("purity", "purity"))
MASS_TITLE = "share of each sample's plan mass\non its true counterpart (simulation only)"
MODALITY_STYLES = (("-", "s"), ("--", "^"), ("-.", "D"), (":", "v"))  # line style and marker per gated modality
LOG_SCALE_SPAN = 100.0  # a loss panel whose largest value is more than this times its smallest is drawn on a log scale
TSNE_LEGEND_LABELS = 12  # more labels than this get a colour bar instead of a legend entry each
SCORE_LIMITS = (0.0, 1.02)  # ACC, NMI, purity: the full 0-1 range, a little headroom so a score of 1 stays visible


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)


def _round_axes(axes: Any) -> None:
    """Rounds on the x axis of every panel in ``axes``: whole numbers, labelled."""
    from matplotlib.ticker import MaxNLocator

    for axis in np.ravel(axes):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelbottom=True)
        axis.set_xlabel("round")


def _legend_or_note(axis: Any, note: str) -> None:
    """The panel's legend, or ``note`` written across it when nothing was drawn."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=7)
    else:
        axis.text(0.5, 0.5, note, transform=axis.transAxes, ha="center", va="center", fontsize=11, color="dimgrey")


def _mass_note(rows: Sequence[dict]) -> str:
    """Why the counterpart-mass panel of these metrics rows is empty."""
    if not any("mixer" in row for row in rows):
        return "no modality mixed"
    if not any("alignment" in row for row in rows):
        return "not measured\n(simulation with fused-eval only)"
    return "the mixed batches never shared a sample"


def plot_scores(run_dirs: list[Path], path: Path) -> None:
    """ACC, NMI and purity per evaluated round on 0-1 axes (a colour per run; solid: mean over
    modalities, dashed: fused codes) and the counterpart mass of the rounds that measured it."""
    plt = _pyplot()
    rows = {run_dir: read_rounds(run_dir) for run_dir in run_dirs}
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharex=True)
    score_axes, mass_axis = axes.flat[:3], axes.flat[3]
    for axis, (key, name) in zip(score_axes, SCORE_PANELS):
        for index, (run_dir, run_rows) in enumerate(rows.items()):
            for prefix, style, marker, what in (("", "-", "o", "mean over modalities"),
                                                ("fused_", "--", "s", "fused (concatenated codes)")):
                points = [(r["round"], r["eval"][prefix + key]) for r in run_rows if prefix + key in r.get("eval", {})]
                if points:
                    axis.plot(*zip(*points), linestyle=style, marker=marker if len(points) < 30 else None, markersize=3,
                              color=f"C{index % 10}", label=f"{run_dir.name}: {what}")
        axis.set(title=f"{name} per evaluated round", ylabel=name, ylim=SCORE_LIMITS)
        axis.grid(alpha=0.3)
        _legend_or_note(axis, f"no {name} in these runs' evaluations")
    for index, (run_dir, run_rows) in enumerate(rows.items()):
        points = [(r["round"], r["alignment"]["true_mass"], r["alignment"]["true_mass_chance"])
                  for r in run_rows if "true_mass" in r.get("alignment", {})]
        if points:
            rounds, mass, chance = zip(*points)
            mass_axis.plot(rounds, mass, marker="o" if len(points) < 30 else None, markersize=3,
                           color=f"C{index % 10}", label=run_dir.name)
            mass_axis.plot(rounds, chance, linestyle=":", linewidth=1, color=f"C{index % 10}",
                           label=f"{run_dir.name}: chance (1 / batch size)")
    mass_axis.set(title=MASS_TITLE, ylabel="share of mass")
    mass_axis.set_ylim(bottom=0)
    mass_axis.grid(alpha=0.3)
    _legend_or_note(mass_axis, _mass_note([row for run_rows in rows.values() for row in run_rows]))
    _round_axes(axes)
    _save(figure, path)


def _spans_orders_of_magnitude(axis: Any) -> bool:
    """Whether every value drawn on ``axis`` is positive and the largest exceeds the smallest
    ``LOG_SCALE_SPAN``-fold."""
    values = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in axis.get_lines()] or [np.ones(1)])
    return bool(values.min() > 0 and values.max() > LOG_SCALE_SPAN * values.min())


def modality_losses(row: dict) -> dict[str, dict[str, float]]:
    """A round's loss terms per modality: as logged, or the mean over a modality's sites (logged
    as ``m.s``)."""
    grouped: dict[str, list[dict[str, float]]] = {}
    for label, terms in row.get("losses", {}).items():
        grouped.setdefault(label.split(".")[0], []).append(terms)
    return {modality: {term: float(np.mean([site[term] for site in sites if term in site]))
                       for term in dict.fromkeys(t for site in sites for t in site)}
            for modality, sites in grouped.items()}


def plot_losses(run_dirs: list[Path], path: Path) -> None:
    """One panel per loss term; a colour per run, a line style per modality (the mean of its sites
    with several); a log scale where a panel's values span orders of magnitude."""
    plt = _pyplot()
    rows = {run_dir: read_rounds(run_dir) for run_dir in run_dirs}
    terms = list(dict.fromkeys(term for run_rows in rows.values() for row in run_rows
                               for losses in row.get("losses", {}).values() for term in losses
                               if term not in UPTAKE_READINGS))
    figure, axes = plt.subplots(1, max(len(terms), 1), figsize=(5 * max(len(terms), 1), 4.2), squeeze=False,
                                sharex=True)
    for index, (run_dir, run_rows) in enumerate(rows.items()):
        losses = [modality_losses(row) for row in run_rows]
        modalities = sorted({m for row in losses for m in row}, key=int)
        for axis, term in zip(axes[0], terms):
            for style, modality in zip(itertools.cycle(("-", "--", ":", "-.")), modalities):
                points = [(r["round"], row[modality][term]) for r, row in zip(run_rows, losses)
                          if term in row.get(modality, {})]
                if points:
                    axis.plot(*zip(*points), style, color=f"C{index % 10}", label=f"{run_dir.name} m{modality}")
    for axis, term in zip(axes[0], terms):
        log = _spans_orders_of_magnitude(axis)
        if log:
            axis.set_yscale("log")
        axis.set(title=f"{term.replace('_', ' ')} loss (mean per sample)", ylabel="loss (log scale)" if log else "loss")
        axis.grid(alpha=0.3)
    for axis in axes[0]:
        _legend_or_note(axis, "no losses recorded")
    _round_axes(axes)
    _save(figure, path)


def gate_series(row: dict, name: str) -> dict[str, float]:
    """Gated modality -> this round's reading ``name`` of a metrics row with frames: every
    modality but the reference (runs made before readings were logged kept only the
    ``confidence`` of every modality)."""
    frames = row["frames"]
    if "readings" in frames:
        return {m: values[name] for m, values in frames["readings"].items() if name in values}
    if name != "confidence":
        return {}
    return {m: value for m, value in frames["confidence"].items() if m != str(frames.get("reference"))}


def window_means(series: Sequence[float], window: int) -> list[float]:
    """The mean of the last ``window`` values at each position that has that many, as the
    ``ConfidenceGate`` compares it to its threshold; empty while ``series`` is shorter."""
    return [float(np.mean(series[end - window:end])) for end in range(window, len(series) + 1)]


def gate_window_means(counted: Sequence[tuple[dict, float]], modality: str,
                      window: int) -> tuple[list[int], list[float], int | None]:
    """What the gate compared for ``modality``, given its readings (``counted``: the metrics row
    and the reading of each round that has one, in order): the rounds with a full window up to the
    one it opened in, the window mean at each, and the round it opened in (None if it never did)."""
    opened = next((index for index, (row, _) in enumerate(counted)
                   if int(modality) in row["frames"].get("opened", row["frames"]["mixed"])), None)
    kept = counted if opened is None else counted[:opened + 1]
    rounds = [row["round"] for row, _ in kept]
    return rounds[window - 1:], window_means([value for _, value in kept], window), \
        None if opened is None else rounds[opened]


def _draw_gate(axis: Any, run_name: str, framed: list[dict], name: str, threshold: float | None,
               window: int) -> None:
    """One run's gate on statistic ``name``: per gated modality its window means (bold) and
    readings (faint), the round it opened (star) and the rounds it mixed (dots)."""
    from matplotlib.lines import Line2D

    series = [(row, gate_series(row, name)) for row in framed]
    modalities = sorted({m for _, values in series for m in values}, key=int)
    opened_any = mixed_any = False
    for index, modality in enumerate(modalities):
        colour, (style, marker) = f"C{int(modality) % 10}", MODALITY_STYLES[index % len(MODALITY_STYLES)]
        counted = [(row, values[modality]) for row, values in series if modality in values]
        axis.plot([row["round"] for row, _ in counted], [value for _, value in counted], color=colour,
                  linestyle=style, linewidth=0.8, alpha=0.45, label=f"m{modality}: reading per round")
        mixed = [(row["round"], value) for row, value in counted if int(modality) in row["frames"]["mixed"]]
        if mixed:
            axis.scatter(*zip(*mixed), color=colour, s=9, zorder=3)
            mixed_any = True
        rounds, means, opened = gate_window_means(counted, modality, window)
        if means:
            verdict = "" if threshold is None else \
                f", opened in round {opened}" if opened is not None else ", never opened"
            axis.plot(rounds, means, color=colour, linestyle=style, linewidth=2, marker=marker, markersize=4,
                      markevery=max(1, len(means) // 12), label=f"m{modality}: mean of last {window} rounds{verdict}")
        if opened is not None and means:
            axis.scatter([opened], [means[-1]], marker="*", s=160, color=colour, edgecolors="black", zorder=4)
            opened_any = True
    if threshold is not None:
        axis.axhline(threshold, color="black", linestyle=(0, (5, 3)), linewidth=1, label=f"threshold {threshold:g}")
    explained = ([Line2D([], [], color="black", marker="o", markersize=3, linestyle="none",
                         label="dot: mixed in this round")] if mixed_any else []) + \
                ([Line2D([], [], color="white", marker="*", markersize=11, markeredgecolor="black", linestyle="none",
                         label="star: opened (window mean reached threshold)")] if opened_any else [])
    reference = framed[-1]["frames"].get("reference")
    rule = f"a modality mixes once its mean {name} over {window} rounds reaches the threshold" \
        if threshold is not None else "gate off: every modality mixes"
    axis.set(title=f"{run_name}: {rule}" + (f"\nm{reference} is the reference frame: it mixes once another opens"
                                            if reference is not None else ""), ylabel=name)
    axis.title.set_fontsize(9)
    axis.grid(alpha=0.3)
    handles, _ = axis.get_legend_handles_labels()
    if handles:
        axis.legend(handles=handles + explained, fontsize=7)
    else:
        _legend_or_note(axis, f"no {name} readings")


def plot_gate(run_dirs: list[Path], path: Path) -> bool:
    """One panel per run with frames and statistic its gate reads (``confidence`` when the gate is
    off); False (nothing written) when no run aligned frames."""
    framed_rows = {run_dir: [row for row in read_rounds(run_dir) if "frames" in row] for run_dir in run_dirs}
    panels = []
    for run_dir, framed in framed_rows.items():
        if framed:
            saved = run_dir / CONFIG_FILE
            config = {**DEFAULTS, **(load_scenario(str(saved)) if saved.is_file() else {})}
            thresholds = gate_thresholds(config)
            panels += [(run_dir.name, framed, name, thresholds.get(name), config["gate-window"])
                       for name in thresholds or ("confidence",)]
    if not panels:
        return False
    figure, axes = _pyplot().subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        _draw_gate(axis, *panel)
    _round_axes(axes)
    _save(figure, path)
    return True


def plot_tsne(run_dirs: list[Path], path: Path, seed: int = 0) -> bool:
    """The t-SNE panel of each run that saved its codes, coloured by true label; False (nothing
    written) when none did."""
    runs = [run_dir for run_dir in run_dirs if (run_dir / EVAL_CODES_FILE).is_file()]
    if not runs:
        return False
    from sklearn.manifold import TSNE

    plt = _pyplot()
    figure, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 5), squeeze=False)
    for axis, run_dir in zip(axes[0], runs):
        arrays = np.load(run_dir / EVAL_CODES_FILE)
        codes = np.concatenate([arrays[name] for name in sorted(arrays.files) if name.startswith("codes-")], axis=1)
        embedded = TSNE(n_components=2, init="pca", random_state=seed,
                        perplexity=min(30.0, (len(codes) - 1) / 3)).fit_transform(codes)
        labels, final = arrays["labels"], (read_summary(run_dir) or {"final": {}})["final"]
        classes = np.unique(labels)
        if len(classes) <= TSNE_LEGEND_LABELS:
            colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            for index, label in enumerate(classes):
                axis.scatter(*embedded[labels == label].T, color=colours(index), s=6, label=f"{label}")
            axis.legend(title="true label", fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            points = axis.scatter(*embedded.T, c=labels, cmap="tab20", s=6)
            figure.colorbar(points, ax=axis, label=f"true label ({len(classes)} labels)")
        axis.set_title(f"{run_dir.name}: t-SNE of the final fused codes\ncolours: true labels; "
                       f"fused ACC {final.get('fused_acc', float('nan')):.3f}", fontsize=9)
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
