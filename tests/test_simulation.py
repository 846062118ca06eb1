"""End to end through Flower's simulation engine (Ray): files, scores, and what crosses the wire."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from otm_fed.config import resolve_config
from otm_fed.results import read_rounds
from launcher.inprocess import run_inprocess
from launcher.simulation import run_simulation
from server.strategy import OTMStrategy

pytestmark = pytest.mark.simulation

ROOT = Path(__file__).resolve().parents[1]
WIRE_LOG: list[dict] = []


def describe(content) -> dict:
    """Every record of a reply: its kind, and for arrays their dtype and shape."""
    described = {}
    for name, record in content.items():
        kind = type(record).__name__
        if kind == "ArrayRecord":
            described[name] = (kind, {k: (str(a.numpy().dtype), a.numpy().shape) for k, a in record.items()})
        else:
            described[name] = (kind, dict(record))
    return described


class AuditStrategy(OTMStrategy):
    """OTM, unchanged, that logs every reply it receives before using it."""

    def valid_replies(self, replies, kind):
        replies = list(replies)
        WIRE_LOG.extend({"stage": kind, "records": describe(reply.content)} for reply in replies
                        if not reply.has_error())
        return super().valid_replies(replies, kind)


def simulate(tmp_path: Path, scenario: str, n_modalities: int, **overrides) -> tuple[Path, dict]:
    config = resolve_config(scenario, {key.replace("_", "-"): str(value) for key, value in overrides.items()})
    run_dir = run_simulation(config, n_modalities, tmp_path / "run")
    return run_dir, json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    WIRE_LOG.clear()
    return simulate(tmp_path_factory.mktemp("synthetic"), "synthetic", 3, rounds=3, eval_every=3,
                    synthetic_samples=240, batch_size=64, strategy="tests.test_simulation:AuditStrategy",
                    gate_threshold=0.0)  # every agent mixes every round: the whole TRAIN path crosses the wire


def check_scores(final: dict, n_modalities: int) -> None:
    for name in ("purity", "acc", "nmi", "ari"):
        assert np.isfinite(final[name])
        assert len(final[f"{name}_per_modality"]) == n_modalities
    assert 0 < final["purity"] <= 1 and 0 <= final["acc"] <= 1 and 0 <= final["nmi"] <= 1
    assert -1 <= final["ari"] <= 1 and 0 < final["fused_purity"] <= 1


def test_synthetic_run_writes_config_metrics_and_summary(synthetic_run):
    run_dir, summary = synthetic_run
    assert (run_dir / "config.toml").is_file()
    rounds = read_rounds(run_dir)
    assert [row["round"] for row in rounds] == [1, 2, 3]
    for row in rounds:
        assert set(row["bytes_up"]) == {"0", "1", "2"} and all(v == 64 * 16 * 4 for v in row["bytes_up"].values())
        assert row["missing_modalities"] == [] and row["failures"] == []
        assert row["mixer"]["objective"] <= row["mixer"]["initial_objective"] + 1e-9
        assert {"query", "mix", "train", "total"} <= set(row["seconds"])
    assert "eval" in rounds[-1] and "eval" not in rounds[0]
    assert summary["scenario"] == "synthetic" and summary["rounds"] == 3 and summary["seed"] == 0
    check_scores(summary["final"], 3)
    # Two strong views of well-separated clusters: their own codes cluster far above chance (1/6).
    assert min(summary["final"]["purity_per_modality"][:2]) > 0.6


def test_wire_audit_replies_carry_only_latent_codes_and_metrics(synthetic_run):
    """Piggy-backing (the default): round 1 QUERYs; each TRAIN reply carries the next round's codes,
    and the last one the evaluation, so no EVALUATE exchange is needed."""
    assert WIRE_LOG, "the audit strategy saw no replies"
    stages = {entry["stage"] for entry in WIRE_LOG}
    assert stages == {"query", "train"}
    train_arrays = []
    for entry in WIRE_LOG:
        records = entry["records"]
        assert records["config"] == ("ConfigRecord", {"modality": records["config"][1]["modality"]})
        if entry["stage"] == "query":
            assert set(records) == {"config", "arrays"}
            assert records["arrays"] == ("ArrayRecord", {"latent-codes": ("float32", (64, 16))})
        else:
            assert set(records) == {"config", "metrics", "arrays"}
            assert records["metrics"][0] == "MetricRecord"
            train_arrays.append(records["arrays"][1])
    codes, evaluation = {"latent-codes": ("float32", (64, 16))}, {"eval-codes": ("float32", (240, 16))}
    assert train_arrays == [codes] * 6 + [evaluation] * 3  # fused-eval (simulation only): codes, no labels
    evaluated = [entry["records"]["metrics"][1] for entry in WIRE_LOG[-3:]]
    assert all({"eval-purity", "eval-acc", "eval-nmi", "eval-ari", "total"} <= set(m) for m in evaluated)
    assert len(WIRE_LOG) == 3 + 3 * 3


def test_prokaryotic_three_rounds_through_flower(tmp_path, data_dir):
    run_dir, summary = simulate(tmp_path, "prokaryotic", 3, rounds=3, eval_every=3, batch_size=128,
                                data_dir=data_dir, eta=0.1, gate_threshold=0.0, target_flow="false")
    rounds = read_rounds(run_dir)
    assert len(rounds) == 3
    # eta > 0, no gate, no flow: the eq. 7 regulariser's gradient G_m travels with each TRAIN and
    # enters the loss.
    assert all("server_regulariser" in losses for row in rounds for losses in row["losses"].values())
    assert all(row["bytes_down"]["0"] > 128 * 16 * 4 * 2 for row in rounds)
    check_scores(summary["final"], 3)
    assert summary["final"]["purity"] >= 0.56  # purity is never below the majority share 0.568


README_EXAMPLE = re.compile(r"```python\n# my_strategy\.py\n(.*?)```", re.S)


def test_readme_custom_strategy_example_runs(tmp_path, monkeypatch):
    code = README_EXAMPLE.search((ROOT / "README.md").read_text()).group(1)
    assert len(code.strip().splitlines()) <= 30
    (tmp_path / "my_strategy.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir, summary = simulate(tmp_path, "synthetic", 3, rounds=2, eval_every=2, synthetic_samples=120,
                                batch_size=32, strategy="my_strategy:SoftWassersteinStrategy", gate_threshold=0.0)
    assert summary["strategy"] == "soft-wasserstein"
    assert all(row["mixer"]["modalities"] == [0, 1, 2] for row in read_rounds(run_dir))
    check_scores(summary["final"], 3)


def test_local_only_baseline_sends_no_codes(tmp_path):
    run_dir, summary = simulate(tmp_path, "synthetic", 3, rounds=2, eval_every=2, synthetic_samples=120,
                                batch_size=32, strategy="local-only")
    rows = read_rounds(run_dir)
    assert all(row["bytes_up"] == {} and "mixer" not in row for row in rows)
    assert summary["strategy"] == "local-only"
    check_scores(summary["final"], 3)


def test_inprocess_engine_gives_the_same_numbers_as_flower_simulation(synthetic_run, tmp_path):
    """Same seed, same config: the in-process engine runs exactly the same server and client steps."""
    flower_dir, flower_summary = synthetic_run
    config = resolve_config(str(flower_dir / "config.toml"), {"strategy": "otm"})
    inprocess_dir = run_inprocess(config, 3, tmp_path / "inprocess")
    inprocess_summary = json.loads((inprocess_dir / "summary.json").read_text())
    for name in ("purity", "acc", "nmi", "ari", "fused_purity"):
        assert inprocess_summary["final"][name] == pytest.approx(flower_summary["final"][name], abs=1e-6)
    for flower_row, inprocess_row in zip(read_rounds(flower_dir), read_rounds(inprocess_dir)):
        for modality, losses in flower_row["losses"].items():
            assert inprocess_row["losses"][modality] == pytest.approx(losses, rel=1e-5)
        assert inprocess_row["mixer"]["objective"] == pytest.approx(flower_row["mixer"]["objective"], rel=1e-9)


def test_ray_actors_share_the_cores():
    from launcher.simulation import backend_config

    assert backend_config(2)["client_resources"]["num_cpus"] == 2  # default: one actor, every core
    assert backend_config(2, actors=2)["client_resources"]["num_cpus"] == 1  # two actors on two cores
    with pytest.raises(ValueError, match="actors"):
        backend_config(2, actors=3)


def test_cli_refuses_more_actors_than_cores(capsys):
    import os

    from launcher.cli import main

    assert main(["simulate", "--actors", str((os.cpu_count() or 1) + 1)]) == 2
    assert "--actors must be between 1 and" in capsys.readouterr().err


def test_sites_through_flower_simulation_give_the_inprocess_numbers(tmp_path):
    """Two sites per modality in Flower's simulation (HELLO, shares, FedAvg through Ray): the same
    numbers as the in-process engine."""
    flower_dir, flower = simulate(tmp_path / "flower", "synthetic", 6, rounds=2, eval_every=2, synthetic_samples=240,
                                  batch_size=64, sites=2, gate_threshold=0.0, target_flow="false")
    config = resolve_config(str(flower_dir / "config.toml"), {})
    inprocess = json.loads((run_inprocess(config, 6, tmp_path / "inprocess") / "summary.json").read_text())
    assert list(flower["final"]["acc_per_site"]) == ["0.0", "0.1", "1.0", "1.1", "2.0", "2.1"]
    for site, acc in flower["final"]["acc_per_site"].items():
        assert inprocess["final"]["acc_per_site"][site] == pytest.approx(acc, abs=1e-6)
    assert [row["site_average"] for row in read_rounds(flower_dir)] == [{"0": ["0.0", "0.1"], "1": ["1.0", "1.1"],
                                                                         "2": ["2.0", "2.1"]}] * 2
