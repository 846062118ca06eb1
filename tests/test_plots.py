"""After a run (issue 14, item 7): its plots in the run folder, ``otm-fed plot``, and a console
that names every file written, shows the fused ACC and labels the loss and round 1's start-up."""

import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import main

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


def test_gate_plot_only_for_runs_that_aligned_frames(tmp_path):
    import json

    from otm_fed.plots import plot_gate

    local, framed = tmp_path / "local", tmp_path / "framed"
    for run_dir, extra in ((local, {}), (framed, {"frames": {"confidence": {"0": 0.4, "1": 0.4}, "mixed": [0, 1]}})):
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"round": r, **extra}) + "\n" for r in (1, 2)))
    assert not plot_gate([local], tmp_path / "none.png") and not (tmp_path / "none.png").exists()
    assert plot_gate([local, framed], tmp_path / "gate.png") and (tmp_path / "gate.png").stat().st_size > 1000


def test_gate_plot_draws_each_statistic_a_two_statistic_gate_reads(tmp_path):
    import json

    from otm_fed.plots import gate_series, plot_gate
    from otm_fed.results import CONFIG_FILE

    rule = tmp_path / "rule"
    rule.mkdir()
    (rule / CONFIG_FILE).write_text('anchors = 10\nanchor-gate = "retrieval-partition"\n')
    rows = [{"round": r, "frames": {"confidence": {"0": 0.3, "1": 0.3}, "mixed": [],
                                    "readings": {"1": {"confidence": 0.3, "retrieval": 0.1 * r, "partition-agreement": 0.5}}}}
            for r in (1, 2)]
    (rule / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert gate_series(rows[1], "retrieval") == {"1": 0.2} and gate_series(rows[1], "confidence") == {"0": 0.3, "1": 0.3}
    assert plot_gate([rule], tmp_path / "gate.png") and (tmp_path / "gate.png").stat().st_size > 1000
