"""What mixing did, per modality: the summary's ``mixing`` record, the console's lines after the
final table, and the per-round count, on the in-process engine with tiny settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from launcher.inprocess import run_inprocess
from otm_fed.config import resolve_config
from otm_fed.results import CHECKPOINT_FILE, TEACHER, format_summary, read_summary

SMALL = {"synthetic-samples": "240", "batch-size": "64"}
NEVER = "never mixed: trained alone (gate closed), identical to local-only"


def run(tmp_path: Path, capsys: pytest.CaptureFixture, **overrides: Any) -> tuple[dict, list[str], list[str]]:
    """(summary, the per-round lines' mixing counts, the console lines after the final table)."""
    config = resolve_config("synthetic", {**SMALL, **{k.replace("_", "-"): str(v) for k, v in overrides.items()}})
    run_dir = run_inprocess(config, 3, tmp_path / "run")
    return read_summary(run_dir), *console(capsys.readouterr().out)


def console(out: str) -> tuple[list[str], list[str]]:
    """(each round line's "mixed K of M modalities", or "" without one; the lines from "mixing:" on
    up to the run folder's)."""
    lines = out.splitlines()
    counts = [(re.search(r"mixed \d+ of \d+ modalities", line) or [""])[0] for line in lines
              if line.startswith("round ")]
    start = next(i for i, line in enumerate(lines) if line.startswith("mixing:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("run folder:"))
    return counts, lines[start:end]


def entry(modality: int, first_round: int | None, because: str | None = None) -> dict[str, Any]:
    return {"modality": modality, "mixed": first_round is not None, "first_mixed_round": first_round,
            "trained_alone_because": because}


def test_no_modality_mixes_before_the_gate_can_open(tmp_path, capsys):
    # two rounds, gate-window 10: no modality has the readings to open, so every one trains alone
    summary, counts, lines = run(tmp_path, capsys, rounds=2, eval_every=2)
    assert summary["mixing"] == [entry(m, None, "gate closed") for m in range(3)]
    assert counts == ["mixed 0 of 3 modalities"] * 2
    assert lines == ["mixing: no modality mixed", *(f"  modality {m}: {NEVER}" for m in range(3))]


def test_gate_and_flow_off_mix_every_modality_from_round_one(tmp_path, capsys):
    summary, counts, lines = run(tmp_path, capsys, rounds=2, eval_every=2, gate_threshold=0, target_flow="false")
    assert summary["mixing"] == [entry(m, 1) for m in range(3)]
    assert counts == ["mixed 3 of 3 modalities"] * 2
    assert lines == ["mixing: 3 of 3 modalities mixed", *(f"  modality {m}: mixed from round 1" for m in range(3))]


def test_a_modality_that_gives_its_codes_but_takes_nothing_back_is_called_a_teacher(tmp_path, capsys):
    # gate off, flow on: every modality's codes are mixed from round 1, but the flow takes nothing
    # back before its window of gate-window rounds is full
    summary, counts, lines = run(tmp_path, capsys, rounds=2, eval_every=2, gate_threshold=0, gate_window=3)
    assert summary["mixing"] == [entry(m, None, TEACHER) for m in range(3)]
    assert counts == ["mixed 0 of 3 modalities"] * 2
    assert lines[1:] == [f"  modality {m}: never mixed: trained alone ({TEACHER}), identical to local-only"
                         for m in range(3)]


def test_local_only_says_it_never_mixes(tmp_path, capsys):
    summary, counts, lines = run(tmp_path, capsys, rounds=1, strategy="local-only")
    assert summary["mixing"] == [entry(m, None, "local-only: no mixing by design") for m in range(3)]
    assert counts == [""]  # nothing to count: no round mixes by design
    assert lines == ["mixing: local-only: no mixing by design (every modality trains alone)"]


def test_opening_round_survives_resume(tmp_path, capsys):
    """The gate opens modality 1 (and so the reference 0) in round 2 of gate-window 2 (the flow
    off, so both take the mix at once); runs extended by resuming still say round 2, from the
    checkpoint or, in a checkpoint without the record, from the rounds' lines."""
    from launcher.cli import main

    summary, counts, lines = run(tmp_path, capsys, rounds=2, eval_every=2, gate_window=2, target_flow="false")
    expected = [entry(0, 2), entry(1, 2), entry(2, None, "gate closed")]
    assert summary["mixing"] == expected
    assert counts == ["mixed 0 of 3 modalities", "mixed 2 of 3 modalities"]
    assert lines == ["mixing: 2 of 3 modalities mixed", "  modality 0: mixed from round 2",
                     "  modality 1: mixed from round 2", f"  modality 2: {NEVER}"]
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / CHECKPOINT_FILE).read_text())["first_mixed"] == {"0": 2, "1": 2}
    assert main(["simulate", "--engine", "inprocess", "--resume", str(run_dir), "--rounds", "3", "--no-plots"]) == 0
    assert read_summary(run_dir)["mixing"] == expected
    checkpoint = json.loads((run_dir / CHECKPOINT_FILE).read_text())
    del checkpoint["first_mixed"]
    (run_dir / CHECKPOINT_FILE).write_text(json.dumps(checkpoint))
    assert main(["simulate", "--engine", "inprocess", "--resume", str(run_dir), "--rounds", "4", "--no-plots"]) == 0
    assert read_summary(run_dir)["mixing"] == expected
    assert console(capsys.readouterr().out)[0][-2:] == ["mixed 2 of 3 modalities"] * 2


def test_supervised_table_and_a_modality_without_partner_say_what_mixing_did():
    summary = {"scenario": "s", "strategy": "otm", "rounds": 5, "seed": 0, "wall_seconds": 1.0,
               "final": {"accuracy": 0.5, "accuracy_per_modality": [0.4, 0.6, 0.5], "late_fusion_accuracy": 0.7},
               "mixing": [entry(0, 3), entry(1, 4), entry(2, None, "no other modality to mix with")]}  # gate off
    assert format_summary(summary).splitlines()[-4:] == [
        "mixing: 2 of 3 modalities mixed", "  modality 0: mixed from round 3", "  modality 1: mixed from round 4",
        "  modality 2: never mixed: trained alone (no other modality to mix with), identical to local-only"]
    del summary["mixing"]  # a summary written before the record: the table alone
    assert format_summary(summary).splitlines()[-1].startswith("| test fold |")
