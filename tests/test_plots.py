"""After a run: its plots in the run folder, ``otm-fed plot``, and a console that names every file
written, shows the fused ACC and labels the loss and round 1's start-up; plots a person reads
without the docs (the gate's window means against its threshold, 0-1 score axes, a counterpart
panel that says when nothing mixed, legends) and that are all written whatever a round lacks."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import otm_fed.plots as plots
from launcher.cli import main
from otm_fed.alignment import alignment_scores
from otm_fed.frames import ConfidenceGate
from otm_fed.results import CONFIG_FILE, EVAL_CODES_FILE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_with_console(tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("plots") / "run"
    import contextlib
    import io

    stream = io.StringIO()
    with contextlib.redirect_stdout(stream):
        assert main(["simulate", "--engine", "inprocess", "--rounds", "2", "--set", "eval-every=2", "--set",
                     "synthetic-samples=120", "--set", "batch-size=32", "--out", str(run_dir)]) == 0
    return run_dir, stream.getvalue()


def test_a_run_writes_its_plots_and_names_every_file(run_with_console):
    run_dir, console = run_with_console
    for name in ("scores-per-round.png", "losses-per-round.png", "gate-per-round.png", "tsne.png"):
        assert (run_dir / name).stat().st_size > 1000
    closing = console.strip().splitlines()[-1]
    assert closing == (f"wrote {run_dir}/: agents/, config.toml, eval-codes.npz, gate-per-round.png, losses-per-round.png, metrics.jsonl, "
                       "scores-per-round.png, server-state.json, summary.json, tsne.png")


def test_console_shows_fused_acc_the_loss_label_and_start_up(run_with_console):
    _, console = run_with_console
    lines = console.splitlines()
    round_one = next(line for line in lines if line.startswith("round   1/2"))
    assert "loss (mean total)" in round_one and "including the agents' start-up" in round_one
    assert "fused (concatenated aligned codes)" in console
    acc = next(line for line in lines if line.startswith("| acc |"))
    assert len(acc.split("|")) == 6  # metric, mean, per modality, fused


def test_plot_command_draws_into_a_folder(run_with_console, tmp_path, capsys):
    run_dir, _ = run_with_console
    assert main(["plot", str(run_dir), str(run_dir), "--out", str(tmp_path / "plots")]) == 0
    assert capsys.readouterr().out.strip() == "wrote " + ", ".join(
        str(tmp_path / "plots" / name) for name in ("scores-per-round.png", "losses-per-round.png", "gate-per-round.png",
                                                    "tsne.png"))
    assert main(["plot", str(tmp_path)]) == 2
    assert "not run folders (no metrics.jsonl)" in capsys.readouterr().err


def test_agents_and_the_server_do_not_import_matplotlib():
    code = ("import sys, otm_fed.plots, clients.client_app, server.server_app; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def write_run(run_dir: Path, rows: list[dict], config: str = "", labels: np.ndarray | None = None) -> Path:
    """A run folder holding ``rows`` as its metrics, ``config`` as its saved config and, with
    ``labels``, final codes for the t-SNE."""
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if config:
        (run_dir / CONFIG_FILE).write_text(config)
    if labels is not None:
        rng = np.random.default_rng(0)
        codes = {f"codes-{m}": rng.normal(size=(len(labels), 4)) + labels[:, None] for m in (0, 1)}
        np.savez(run_dir / EVAL_CODES_FILE, labels=labels, **codes)
    return run_dir


@pytest.fixture
def figures(monkeypatch) -> list[Any]:
    """The figures the plots draw, kept instead of saved."""
    drawn: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure))
    yield drawn
    for figure in drawn:
        plots._pyplot().close(figure)


def lines_by_label(axis) -> dict[str, Any]:
    return {line.get_label(): line for line in axis.get_lines()}


def test_window_means_are_the_trailing_means_of_full_windows():
    assert plots.window_means([0.1, 0.3, 0.5, 0.4, 0.9], 3) == pytest.approx([0.3, 0.4, 0.6])
    assert plots.window_means([0.1, 0.3], 3) == []
    assert plots.window_means([0.2, 0.7], 1) == pytest.approx([0.2, 0.7])


def gate_rows(readings: dict[int, list[float]], threshold: float, window: int) -> list[dict]:
    """Metrics rows as the server writes them, the gate deciding with ``ConfidenceGate`` itself."""
    gate, rows = ConfidenceGate({"confidence": threshold}, window), []
    for index in range(len(next(iter(readings.values())))):
        this_round = {m: {"confidence": values[index]} for m, values in readings.items()}
        mixed = gate.admit(this_round, reference=0)
        rows.append({"round": index + 1, "frames": {
            "reference": 0, "confidence": {"0": max(v["confidence"] for v in this_round.values()),
                                           **{str(m): v["confidence"] for m, v in this_round.items()}},
            "readings": {str(m): v for m, v in this_round.items()}, "mixed": mixed, "opened": sorted(gate.opened)}})
    return rows


M1 = [0.1, 0.3, 0.5, 0.4, 0.9, 0.7, 0.8, 0.9]  # window means 0.3, 0.4, 0.6: opens in round 5
M2 = [0.1, 0.2, 0.3, 0.2, 0.1, 0.2, 0.3, 0.2]  # never reaches 0.5


def test_gate_window_means_stop_where_the_gate_opened_the_modality():
    rows = gate_rows({1: M1, 2: M2}, threshold=0.5, window=3)
    assert [row["frames"]["opened"] for row in rows][3:5] == [[], [1]]  # the gate itself opened m1 in round 5
    rounds, means, opened = plots.gate_window_means([(row, row["frames"]["readings"]["1"]["confidence"])
                                                     for row in rows], "1", window=3)
    assert (rounds, opened) == ([3, 4, 5], 5) and means == pytest.approx([0.3, 0.4, 0.6])
    rounds, means, opened = plots.gate_window_means([(row, row["frames"]["readings"]["2"]["confidence"])
                                                     for row in rows], "2", window=3)
    assert (rounds, opened) == ([3, 4, 5, 6, 7, 8], None)
    assert means == pytest.approx([0.2, 0.7 / 3, 0.2, 0.5 / 3, 0.2, 0.7 / 3])


def test_gate_plot_draws_window_means_against_the_threshold(tmp_path, figures):
    run = write_run(tmp_path / "gated", gate_rows({1: M1, 2: M2}, threshold=0.5, window=3),
                    "gate-threshold = 0.5\ngate-window = 3\n")
    assert plots.plot_gate([run], tmp_path / "gate.png")
    (axis,) = figures[0].axes
    lines = lines_by_label(axis)
    opened = lines["m1: mean of last 3 rounds, opened in round 5"]
    assert list(opened.get_xdata()) == [3, 4, 5] and list(opened.get_ydata()) == pytest.approx([0.3, 0.4, 0.6])
    closed = lines["m2: mean of last 3 rounds, never opened"]
    assert list(closed.get_xdata()) == [3, 4, 5, 6, 7, 8]
    assert list(closed.get_ydata()) == pytest.approx(plots.window_means(M2, 3))
    assert list(lines["m1: reading per round"].get_ydata()) == pytest.approx(M1)  # the raw reading, all rounds
    assert list(lines["threshold 0.5"].get_ydata()) == [0.5, 0.5]
    assert opened.get_linestyle() != closed.get_linestyle() and opened.get_marker() != closed.get_marker()
    star, mixed = sorted(axis.collections, key=lambda points: len(points.get_offsets()))
    assert star.get_offsets().tolist() == [[5, pytest.approx(0.6)]]
    assert mixed.get_offsets()[:, 0].tolist() == [5, 6, 7, 8]  # m1 mixed from the round it opened
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert "dot: mixed in this round" in legend and "star: opened (window mean reached threshold)" in legend
    assert "m0 is the reference frame" in axis.get_title()


def test_gate_plot_only_for_runs_that_aligned_frames(tmp_path):
    local = write_run(tmp_path / "local", [{"round": r} for r in (1, 2)])
    frames = {"confidence": {"0": 0.4, "1": 0.4}, "mixed": [0, 1]}
    framed = write_run(tmp_path / "framed", [{"round": r, "frames": frames} for r in (1, 2)])
    assert not plots.plot_gate([local], tmp_path / "none.png") and not (tmp_path / "none.png").exists()
    assert plots.plot_gate([local, framed], tmp_path / "gate.png") and (tmp_path / "gate.png").stat().st_size > 1000


def test_gate_plot_reads_the_gated_statistic_of_each_gated_modality(tmp_path, figures):
    rows = [{"round": r, "frames": {"reference": 0, "confidence": {"0": 0.3, "1": 0.3}, "mixed": [],
                                    "readings": {"1": {"confidence": 0.3, "retrieval": 0.1 * r}}}} for r in (1, 2)]
    assert plots.gate_series(rows[1], "retrieval") == {"1": 0.2}
    assert plots.gate_series(rows[1], "confidence") == {"1": 0.3}  # the reference is not gated
    logged_before_readings = {"frames": {"reference": 0, "confidence": {"0": 0.3, "1": 0.2}}}
    assert plots.gate_series(logged_before_readings, "confidence") == {"1": 0.2}
    run = write_run(tmp_path / "extra", rows, "gate-window = 2\n")
    assert plots.plot_gate([run], tmp_path / "gate.png")
    (axis,) = figures[0].axes
    assert sorted(lines_by_label(axis)) == ["m1: mean of last 2 rounds, never opened", "m1: reading per round",
                                            "threshold 0.25"]


def mixed_round(round_number: int, alignment: dict | None) -> dict:
    row = {"round": round_number, "losses": {"0": {"total": 2.0}, "1": {"total": 1.5}},
           "eval": {"acc": 0.62 + 0.01 * round_number, "nmi": 0.5, "purity": 0.63, "fused_acc": 0.7},
           "frames": {"reference": 0, "confidence": {"0": 0.4, "1": 0.4}, "readings": {"1": {"confidence": 0.4}},
                      "mixed": [0, 1], "opened": [1]}, "mixer": {"objective": 1.0, "modalities": [0, 1]}}
    return row | ({"alignment": alignment} if alignment is not None else {})


def test_every_plot_is_written_when_mixed_batches_share_no_sample(tmp_path, figures):
    plan, labels = np.eye(4) / 4, np.arange(8) % 2
    disjoint = alignment_scores([plan, plan], [np.arange(4), np.arange(4, 8)], labels)
    shared = alignment_scores([plan, plan], [np.arange(4), np.arange(4)], labels)
    assert "true_mass" not in disjoint and shared["true_mass"] == pytest.approx(1.0)
    run = write_run(tmp_path / "run", [mixed_round(1, shared), mixed_round(2, disjoint), mixed_round(3, shared)],
                    "gate-window = 1\n", labels=np.arange(40) % 3)
    written = plots.plot_runs([run], tmp_path / "plots")
    assert [path.name for path in written] == ["scores-per-round.png", "losses-per-round.png", "gate-per-round.png",
                                               "tsne.png"]
    mass_axis = figures[0].axes[3]
    assert list(lines_by_label(mass_axis)["run"].get_xdata()) == [1, 3]  # the round with nothing to measure is skipped


def scores_axes(tmp_path: Path, figures: list, rows: list[dict]) -> list[Any]:
    plots.plot_scores([write_run(tmp_path / "run", rows)], tmp_path / "scores.png")
    return figures[0].axes


def test_score_axes_span_zero_to_one_and_every_panel_has_a_legend(tmp_path, figures):
    measured = {"true_mass": 0.1, "true_mass_chance": 0.01}
    acc, nmi, purity, mass = scores_axes(tmp_path, figures, [mixed_round(r, measured) for r in (1, 2)])
    for axis in (acc, nmi, purity):
        bottom, top = axis.get_ylim()
        assert bottom == 0 and 1 <= top < 1.05
    assert list(lines_by_label(acc)["run: mean over modalities"].get_ydata()) == pytest.approx([0.63, 0.64])
    assert all(axis.get_legend() is not None for axis in (acc, nmi, purity, mass))
    assert mass.get_title() == "share of each sample's plan mass\non its true counterpart (simulation only)"


@pytest.mark.parametrize("rows, note", [
    ([{"round": 1, "eval": {"acc": 0.5}}], "no modality mixed"),
    ([{"round": 1, "mixer": {"objective": 1.0}}], "not measured\n(simulation with fused-eval only)"),
    ([{"round": 1, "mixer": {"objective": 1.0}, "alignment": {"class_mass": 0.5, "class_mass_chance": 0.5}}],
     "the mixed batches never shared a sample"),
])
def test_counterpart_panel_says_why_it_is_empty(tmp_path, figures, rows, note):
    mass = scores_axes(tmp_path, figures, rows)[3]
    assert not mass.get_lines() and [text.get_text() for text in mass.texts] == [note]


def test_loss_panels_spanning_orders_of_magnitude_use_a_log_scale(tmp_path, figures):
    rows = [{"round": r, "losses": {"0": {"reconstruction": value, "neighbour": 2.0 - 0.1 * r}}}
            for r, value in ((1, 900.0), (2, 40.0), (3, 3.0))]
    plots.plot_losses([write_run(tmp_path / "run", rows)], tmp_path / "losses.png")
    reconstruction, neighbour = figures[0].axes
    assert (reconstruction.get_yscale(), neighbour.get_yscale()) == ("log", "linear")
    assert reconstruction.get_legend() is not None and neighbour.get_legend() is not None


@pytest.mark.parametrize("n_labels", [3, 15])
def test_tsne_says_its_colours_are_the_true_labels(tmp_path, figures, n_labels):
    run = write_run(tmp_path / "run", [{"round": 1}], labels=np.arange(45) % n_labels)
    assert plots.plot_tsne([run], tmp_path / "tsne.png")
    axis, *colour_bar = figures[0].axes
    assert "colours: true labels" in axis.get_title()
    if n_labels <= plots.TSNE_LEGEND_LABELS:
        assert [text.get_text() for text in axis.get_legend().get_texts()] == ["0", "1", "2"] and not colour_bar
    else:
        assert colour_bar[0].get_ylabel() == "true label (15 labels)"


def test_losses_of_a_modality_held_at_several_sites_are_its_sites_mean():
    from otm_fed.plots import modality_losses

    row = {"losses": {"0.0": {"total": 1.0, "rec": 0.5}, "0.1": {"total": 3.0, "rec": 1.5}, "1": {"total": 5.0}}}
    assert modality_losses(row) == {"0": {"total": 2.0, "rec": 1.0}, "1": {"total": 5.0}}
