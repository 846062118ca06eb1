"""The correspondence oracle (benchmarks/oracle.py): true plans, Procrustes frames on the true pairs,
a run in which every modality mixes from round 1; and the headroom probes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import special_ortho_group

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import oracle  # noqa: E402
from launcher.inprocess import run_inprocess  # noqa: E402
from otm_fed.config import ConfigError, resolve_config  # noqa: E402
from otm_fed.mixer import OTMixer  # noqa: E402
from otm_fed.results import read_rounds  # noqa: E402


def rotated_copy(seed: int = 0, n: int = 50, d: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Z_0, Z_1, R): Z_1 = 3.7 Z_0 R + c, the same samples in the same order."""
    rng = np.random.default_rng(seed)
    z0 = rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d) + 1.5
    rotation = special_ortho_group.rvs(d, random_state=seed)
    return z0, 3.7 * z0 @ rotation + rng.standard_normal(d), rotation


def test_plans_are_the_true_coupling_and_masks_are_otms():
    z0, z1, _ = rotated_copy()
    codes = [z0, z1, z0[:, ::-1].copy()]
    result = oracle.OracleMixer(mask_mode="binary")(codes, np.random.default_rng(7))
    for plan in result.transport_plans:
        np.testing.assert_array_equal(plan, np.eye(50) / 50)
        np.testing.assert_allclose(plan.sum(1), 1 / 50, atol=1e-15)
        np.testing.assert_allclose(plan.sum(0), 1 / 50, atol=1e-15)
    # OTM draws its masks from the same generator after a barycenter that consumes none of it.
    np.testing.assert_array_equal(result.masks, OTMixer()(codes, np.random.default_rng(7)).masks)
    # eq. 3 at T_m = I / N: each entry of Z~_B is the entry of the modality its mask picks.
    np.testing.assert_allclose(result.mixed_barycenter, sum(mask * z for mask, z in zip(result.masks, codes)))
    np.testing.assert_allclose(result.barycenter.barycenter, sum(codes) / 3)


def test_frames_recover_a_known_rotation():
    z0, z1, rotation = rotated_copy()
    alignment = oracle.oracle_frames({0: z0, 1: z1})
    assert alignment.reference == 0
    np.testing.assert_allclose(alignment.frames[1].rotation, rotation.T, atol=1e-6)
    np.testing.assert_allclose(alignment.frames[1].to_common(z1), alignment.frames[0].to_common(z0), atol=1e-6)
    assert alignment.objectives[1] < 1e-12 and alignment.confidences[1] == pytest.approx(1.0, abs=1e-9)


def test_oracle_refuses_unaligned_batches():
    config = resolve_config("synthetic", {"aligned": "false"})
    with pytest.raises(ConfigError, match="needs aligned = true") as refused:
        oracle.OracleStrategy(config, 3, 6)
    assert "\n" not in str(refused.value)


def test_every_modality_mixes_from_round_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    # no gate; the flow off, so every modality also takes the mix back from round 1
    config = resolve_config("synthetic", {"strategy": "oracle:OracleStrategy", "aligned": "true", "rounds": "2",
                                          "eval-every": "2", "synthetic-samples": "120", "batch-size": "60",
                                          "target-flow": "false"})
    run_dir = run_inprocess(config, 3, tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"] == "otm-oracle" and summary["rounds"] == 2
    assert summary["mixing"] == [{"modality": m, "mixed": True, "first_mixed_round": 1, "trained_alone_because": None}
                                 for m in range(3)]
    rows = read_rounds(run_dir)
    assert all(row["mixer"]["modalities"] == [0, 1, 2] for row in rows)
    # The diagnostic rebuilds the batches from sample ids: all plan mass on the true counterpart.
    assert all(row["alignment"]["true_mass"] == pytest.approx(1.0) for row in rows)
    assert 0 < summary["final"]["acc"] <= 1


def test_headroom_probes_above_chance_on_a_separable_view_near_chance_on_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    rng.shuffle(labels)
    separable = np.eye(4)[labels] * 4.0 + rng.standard_normal((240, 4))
    noise = rng.standard_normal((240, 4))
    train, test = np.arange(160), np.arange(160, 240)
    for x, low, high in ((separable, 0.9, 1.0), (noise, 0.0, 0.45)):
        scores = oracle.probe_scores(x[train], labels[train], x[test], labels[test], seed=0)
        assert set(scores) == {"linear", "mlp"}
        assert all(low <= value <= high for value in scores.values()), scores


def test_the_partial_oracle_pairs_exactly_its_share_of_rows_wrong():
    plan = oracle.partly_wrong_coupling(100, 0.3, np.random.default_rng(0))
    np.testing.assert_allclose(plan.sum(0), 0.01)
    np.testing.assert_allclose(plan.sum(1), 0.01)
    assert np.count_nonzero(np.diag(plan)) == 70
    codes = [np.random.default_rng(m).normal(size=(100, 4)) for m in range(3)]
    result = oracle.OracleMixer(wrong_share=0.3)(codes, 1)
    assert np.count_nonzero(np.diag(result.transport_plans[0])) == 100  # the first modality's rows are the Z_B rows
    assert all(np.count_nonzero(np.diag(plan)) == 70 for plan in result.transport_plans[1:])


def test_the_class_swap_pairs_whole_classes_wrongly_and_keeps_the_others():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3, 3])
    order = oracle.class_swap_order(labels, [0, 1])
    assert sorted(order) == list(range(10))  # a permutation: the plan P / N has uniform marginals
    assert np.array_equal(order[labels >= 2], np.flatnonzero(labels >= 2))  # unswapped classes stay
    assert np.all(labels[order[labels == 0]] == 1) and np.all(labels[order[labels == 1]] == 0)
    result = oracle.OracleMixer(order=tuple(order))([np.eye(10)[:, :4], np.eye(10)[:, 4:8]], 0)
    np.testing.assert_allclose(result.transport_plans[1], np.eye(10)[order] / 10)


def test_the_view_table_pairs_each_seed_with_local_only_on_aligned_batches():
    def row(method, seed, accs, aligned):
        return {"dataset": "d", "method": method, "seed": seed, "aligned": aligned, "acc_per_modality": accs}

    rows = [row("local-only", 1, [0.5, 0.9], True), row("local-only", 2, [0.6, 0.9], True),
            row("local-only", 1, [0.0, 0.0], False),  # unaligned batches: not the oracle's baseline
            row("otm-oracle", 1, [0.7, 0.9], False), row("otm-oracle", 2, [0.8, 0.8], False)]
    line = oracle.view_table(rows).splitlines()[2]
    assert line == ("| d | otm-oracle | 2 | 0.750 0.850 | +0.200 ± 0.000 above, -0.050 ± 0.050 tie | "
                    "+0.0750 ± 0.0250 above |")


def test_headroom_names_a_missing_run_file_among_several_before_any_probe(tmp_path, capsys):
    present = tmp_path / "present.json"
    present.write_text("[]")
    with pytest.raises(SystemExit):
        oracle.main(["headroom", "--runs", f"{present},{tmp_path / 'absent.json'}"])
    err = capsys.readouterr().err
    assert f"no such file: {tmp_path / 'absent.json'}" in err and "present.json" not in err


def test_the_view_table_names_a_run_with_overrides_as_its_own_method():
    def row(method, seed, accs, overrides=None):
        return {"dataset": "d", "method": method, "seed": seed, "aligned": False, "acc_per_modality": accs,
                **({"set": overrides} if overrides else {})}

    rows = [row("local-only", 1, [0.5]), row("local-only", 2, [0.6]),
            row("otm", 1, [0.6]), row("otm", 2, [0.7]),
            row("otm", 1, [0.4], {"gate-threshold": "0"}), row("otm", 2, [0.5], {"gate-threshold": "0"})]
    lines = oracle.view_table(rows).splitlines()[2:]
    assert lines == ["| d | otm | 2 | 0.650 | +0.100 ± 0.000 above | +0.1000 ± 0.0000 above |",
                     "| d | otm gate-threshold=0 | 2 | 0.450 | -0.100 ± 0.000 below | -0.1000 ± 0.0000 below |"]
    # an override every method ran with (local-only too) pairs each method with its own local-only
    l2 = {"normalisation": "l2"}
    rows += [row("local-only", 1, [0.2], l2), row("local-only", 2, [0.3], l2), row("otm", 1, [0.3], l2),
             row("otm", 2, [0.3], l2)]
    assert oracle.view_table(rows).splitlines()[-1] == ("| d | otm normalisation=l2 | 2 | 0.300 | +0.050 ± 0.050 tie | "
                                                       "+0.0500 ± 0.0500 tie |")

