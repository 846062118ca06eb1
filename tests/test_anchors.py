"""Anchors (beyond the paper): K declared samples held in several modalities, whose codes travel in a record of
their own."""

import re

import numpy as np
import pytest
from scipy.stats import ortho_group

from otm_fed.config import ConfigError, resolve_config
from otm_fed.frames import (align_frames, anchor_confidence, anchor_fit_gain, leave_one_out_misfits, null_pairings,
                            pooled_anchor_codes, procrustes_misfit)
from otm_fed.data import normalise_view
from otm_fed.protocol import (ANCHOR_CODES, ANCHOR_POSITIONS, LATENT_CODES, AnchorCodes, ProtocolError, codes_reply,
                              read_codes_reply)
from otm_fed.results import read_rounds
from otm_fed.scenario import anchor_samples, modality_data, read_anchor_file, scenario_dataset, view_normalisation
from launcher.inprocess import run_inprocess
from otm_fed_flwr.records import from_records, to_records
from server.strategy import OTMStrategy

AUDIT: list[dict] = []


class AnchorAudit(OTMStrategy):
    """OTM, unchanged, that logs the records and array shapes of every reply it receives."""

    def valid_replies(self, replies, kind):
        replies = list(replies)
        for reply in replies:
            if not reply.has_error():
                AUDIT.append({"stage": kind, **{name: {key: array.numpy().shape for key, array in record.items()}
                                                for name, record in reply.content.array_records.items()}})
        return super().valid_replies(replies, kind)


@pytest.mark.parametrize("ids, message", [
    ("3\n700\n", "unknown anchor ids [700]"),
    ("3\n5\n3\n", "duplicated anchor ids [3]"),
    ("3\nx\n", "invalid literal"),
])
def test_bad_anchor_files_are_refused_with_one_clear_error(tmp_path, ids, message):
    path = tmp_path / "anchors.txt"
    path.write_text(ids)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_anchor_file(str(path), n_samples=600, expected=3)


def test_anchor_counts_must_fit_the_data_and_the_run(tmp_path):
    path = tmp_path / "anchors.txt"
    path.write_text("# shared reference set\n4\n9  # a comment\n")
    positions, rows = read_anchor_file(str(path), 600, 2)
    assert positions.tolist() == [0, 1] and rows.tolist() == [4, 9]
    with pytest.raises(ConfigError, match="2 anchor lines, but the run has anchors = 3"):
        read_anchor_file(str(path), 600, 3)
    with pytest.raises(ConfigError, match="anchors = 700, but the data has only 600 samples"):
        config = resolve_config("synthetic", {"anchors": "700"})
        anchor_samples(config, scenario_dataset(config))


def test_an_anchor_file_marks_the_anchors_held_elsewhere_with_a_dash(tmp_path):
    path = tmp_path / "anchors.txt"
    path.write_text("-\n12\n-  # at the modality's other site\n3\n")
    positions, rows = read_anchor_file(str(path), 600, 4)
    assert positions.tolist() == [1, 3] and rows.tolist() == [12, 3]
    path.write_text("-\n-\n")
    positions, rows = read_anchor_file(str(path), 600, 2)
    assert positions.size == rows.size == 0


def test_a_deployed_site_of_a_modality_held_at_several_sites_needs_its_anchors_file(tmp_path):
    path = tmp_path / "site.npz"
    np.savez(path, X0=np.random.default_rng(0).normal(size=(40, 5)), y=np.arange(40) % 4)
    config = resolve_config("synthetic", {"sites": "2", "anchors": "5"})
    with pytest.raises(ConfigError, match="each site needs its anchors-file"):
        modality_data(config, 0, str(path), site=1)
    anchors = tmp_path / "anchors.txt"
    anchors.write_text("-\n3\n-\n-\n7\n")
    data = modality_data(config, 0, str(path), str(anchors), site=1)
    assert data.anchor_positions.tolist() == [1, 4] and len(data.anchors) == 2


def test_pooled_anchor_codes_take_each_anchor_from_the_lowest_site_that_holds_it():
    low = (np.array([0, 2]), np.array([[1.0, 1.0], [2.0, 2.0]]))
    high = (np.array([2, 3]), np.array([[9.0, 9.0], [3.0, 3.0]]))
    pooled = pooled_anchor_codes([low, high], 5, 2)
    np.testing.assert_array_equal(pooled[[0, 2, 3]], [[1, 1], [2, 2], [3, 3]])
    assert np.isnan(pooled[[1, 4]]).all()


def test_frames_fit_each_modality_on_the_anchors_it_shares_with_the_reference():
    """Modality 1 holds the anchors, modality 2 only the first 12 (NaN rows for the rest): each is
    fitted and read as if its shared anchors were all there were; one that shares none reads 0."""
    rng = np.random.default_rng(8)
    base = rng.normal(size=(60, 4))
    anchors_base = rng.normal(size=(20, 4))
    rotations = [np.eye(4), ortho_group.rvs(4, random_state=1), ortho_group.rvs(4, random_state=2)]
    codes = {m: base[rng.permutation(60)] @ q for m, q in enumerate(rotations)}
    anchors = {m: anchors_base @ q + 0.3 * rng.normal(size=(20, 4)) for m, q in enumerate(rotations)}
    partial = {**anchors, 2: np.where(np.arange(20)[:, None] < 12, anchors[2], np.nan)}
    fit = align_frames(codes, {}, 0, np.random.default_rng(0), anchors=partial)
    alone = align_frames({0: codes[0], 2: codes[2]}, {}, 0, np.random.default_rng(0),
                         anchors={0: anchors[0][:12], 2: anchors[2][:12]})
    np.testing.assert_allclose(fit.frames[2].rotation, alone.frames[2].rotation, atol=1e-8)
    assert fit.confidences[1] > 0.5 and fit.confidences[2] > 0.5
    none = {**anchors, 2: np.full((20, 4), np.nan)}
    assert align_frames(codes, {}, 0, np.random.default_rng(0), anchors=none).confidences[2] == 0.0


def test_cli_refuses_more_anchors_than_samples_before_any_round(tmp_path, capsys):
    from launcher.cli import main

    assert main(["simulate", "--engine", "inprocess", "--set", "anchors=601", "--out", str(tmp_path / "run")]) == 2
    assert "anchors = 601, but the data has only 600 samples" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_anchors_fix_the_rotation_that_a_wrong_warm_start_would_keep():
    rng = np.random.default_rng(0)
    z0 = rng.normal(size=(80, 6)) * np.arange(1, 7)
    rotation = ortho_group.rvs(6, random_state=1)
    order = rng.permutation(80)
    z1 = (3.0 * z0 @ rotation + 1.0)[order]
    anchors = {0: z0[:5], 1: 3.0 * z0[:5] @ rotation + 1.0}  # the same 5 samples, in one order
    wrong = {1: ortho_group.rvs(6, random_state=2)}
    alignment = align_frames({0: z0, 1: z1}, wrong, gw_starts=0, rng=rng, anchors=anchors)
    np.testing.assert_allclose(alignment.frames[1].rotation, rotation.T, atol=1e-8)


def test_procrustes_misfit_is_zero_for_a_similar_copy_and_matches_a_direct_fit():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 5))
    rotation = ortho_group.rvs(5, random_state=3)
    assert procrustes_misfit(x, 0.4 * x @ rotation - 2.0) == pytest.approx(0.0, abs=1e-12)
    y = rng.normal(size=(12, 5))
    xc, yc = x - x.mean(0), y - y.mean(0)
    u, s, vt = np.linalg.svd(xc.T @ yc)
    scale = s.sum() / (xc ** 2).sum()  # the least-squares scale at the Procrustes rotation U V^T
    direct = ((scale * xc @ u @ vt - yc) ** 2).sum() / (yc ** 2).sum()
    assert procrustes_misfit(x, y) == pytest.approx(direct, rel=1e-12)
    assert procrustes_misfit(x, y) == pytest.approx(procrustes_misfit(y, x), rel=1e-12)
    assert 0.3 < direct < 1.0
    stack = np.stack([x, 2.0 * x @ rotation, y])  # several sets at once, each against y
    np.testing.assert_allclose(procrustes_misfit(stack, y), [procrustes_misfit(x, y)] * 2 + [0.0], atol=1e-12)


def test_anchor_confidence_reads_correspondence_not_structure():
    """Near 1 for anchors that are a rotated, scaled, shifted copy in the same order; near 0 for
    the same clustered codes in a shuffled order (the batches' structure is identical, the
    correspondence gone) and for independent noise."""
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=4.0, size=(3, 8))
    x = centres[np.arange(10) % 3] + rng.normal(size=(10, 8))
    copy = 2.0 * x @ ortho_group.rvs(8, random_state=4) + 1.0
    assert anchor_confidence(x, copy, rng) > 0.99
    shuffled = [anchor_confidence(x, copy[rng.permutation(10)], rng) for _ in range(20)]
    assert np.mean(shuffled) < 0.05 and max(shuffled) < 0.5  # the jackknife minimum leans below 0
    noise = [(rng.normal(size=(10, 8)), rng.normal(size=(10, 8))) for _ in range(20)]
    assert abs(np.mean([anchor_fit_gain(x, y, rng) for x, y in noise])) < 0.05
    assert max(anchor_confidence(x, y, rng) for x, y in noise) < 0.2  # the jackknife minimum reads lower still


def test_leave_one_out_misfits_match_refitting_each_left_out_set():
    """The rank-one updates give what refitting each set without anchor i gives: the true pairing
    and, for each random pairing, the pairing of the other K - 1 it stands for."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(12, 5))
    y = x @ ortho_group.rvs(5, random_state=7) + rng.normal(size=(12, 5))
    orders = np.stack([rng.permutation(12) for _ in range(6)])
    true, null = leave_one_out_misfits(x, y, orders)
    for i in range(12):
        rest = np.delete(np.arange(12), i)
        assert true[i] == pytest.approx(procrustes_misfit(x[rest], y[rest]), rel=1e-10)
        for p, order in enumerate(orders):
            pairing = order.copy()
            pairing[np.argsort(order)[i]] = order[i]  # y once paired with x_i takes x_i's partner
            assert sorted(pairing[rest]) == rest.tolist()
            assert null[p, i] == pytest.approx(procrustes_misfit(x[pairing[rest]], y[rest]), rel=1e-10)


def test_the_null_keeps_about_a_thousand_paired_rows_and_its_precision_as_anchors_grow():
    assert [null_pairings(k) for k in (3, 10, 50, 400)] == [100, 100, 20, 10]
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 16))
    y = x @ ortho_group.rvs(16, random_state=9) + rng.normal(size=(60, 16))
    by_default = [anchor_confidence(x, y, np.random.default_rng(seed)) for seed in range(5)]
    with_all = [anchor_confidence(x, y, np.random.default_rng(seed), 100) for seed in range(5)]
    assert abs(np.mean(by_default) - np.mean(with_all)) < 0.005 and np.std(by_default) < 0.01


def test_one_anchor_extreme_in_both_modalities_is_not_read_as_correspondence():
    """Nine unrelated anchors and one far from the rest in both modalities (shared nuisance, as a
    movie with many keywords and many actors): the plain gain reads it as correspondence, the
    jackknife minimum does not."""
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(10, 16)), rng.normal(size=(10, 16))
    x[0] += 8.0
    y[0] += 8.0
    assert anchor_fit_gain(x, y, rng) > 0.3
    assert anchor_confidence(x, y, rng) < 0.1


def test_with_anchors_the_gate_reads_the_anchors_correspondence():
    """Two modalities whose batches are rotated copies (the structure gate would read near 1) but
    whose anchor rows are shuffled: the confidence is the anchors' (low), not the batches'."""
    rng = np.random.default_rng(5)
    z0 = rng.normal(size=(60, 4)) * np.arange(1, 5)
    rotation = ortho_group.rvs(4, random_state=5)
    z1 = z0 @ rotation
    ids = np.arange(20)
    kept = align_frames({0: z0, 1: z1}, {}, gw_starts=2, rng=rng, anchors={0: z0[ids], 1: z1[ids]})
    shuffled = align_frames({0: z0, 1: z1}, {}, gw_starts=2, rng=rng, anchors={0: z0[ids], 1: z1[rng.permutation(ids)]})
    assert kept.confidences[1] > 0.99 and abs(shuffled.confidences[1]) < 0.2
    strategy = OTMStrategy(resolve_config("synthetic", {"anchors": "10"}), n_modalities=3, n_clusters=6,
                           progress=lambda line: None)
    assert strategy.gate.thresholds == {"confidence": 0.5}  # the anchor threshold, not gate-threshold's 0.25


def test_codes_reply_carries_the_codes_and_positions_of_the_anchors_an_agent_holds():
    codes = np.zeros((8, 4), np.float32)
    held = AnchorCodes(np.array([4, 0, 2]), np.arange(12, dtype=np.float32).reshape(3, 4))
    payload = from_records(to_records(codes_reply(1, codes, held)))
    read = read_codes_reply(payload, 4, 8, n_anchors=5)[2]
    assert read.positions.tolist() == [4, 0, 2] and read.codes.tolist() == held.codes.tolist()
    with pytest.raises(ProtocolError, match="unexpected"):
        read_codes_reply(payload, 4, 8, n_anchors=0)  # a run without anchors takes none
    with pytest.raises(ProtocolError, match="distinct, in 0..3"):
        read_codes_reply(payload, 4, 8, n_anchors=4)  # position 4 does not exist
    with pytest.raises(ProtocolError, match="distinct"):
        read_codes_reply(from_records(to_records(codes_reply(1, codes, AnchorCodes(np.array([1, 1, 2]), held.codes)))),
                         4, 8, n_anchors=5)
    with pytest.raises(ProtocolError, match="one per anchor code row"):
        read_codes_reply(from_records(to_records(codes_reply(1, codes, AnchorCodes(np.array([1, 2]), held.codes)))),
                         4, 8, n_anchors=5)
    assert read_codes_reply(from_records(to_records(codes_reply(1, codes))), 4, 8, n_anchors=5)[2] is None  # holds none


def test_wire_audit_anchor_rows_travel_only_in_the_anchor_record(tmp_path):
    """QUERY and piggy-backed TRAIN replies carry the batch (independent, unaligned rows) in
    arrays and the K anchors' codes, the only rows in correspondence, in the anchors record; every
    agent's anchor rows are the same samples, in the same order."""
    AUDIT.clear()
    config = resolve_config("synthetic", {"rounds": "3", "eval-every": "3", "synthetic-samples": "240",
                                          "batch-size": "64", "anchors": "5", "fused-eval": "false",
                                          "strategy": "tests.test_anchors:AnchorAudit"})
    rows = read_rounds(run_inprocess(config, 3, tmp_path / "run"))
    assert len(rows) == 3
    with_codes = [entry for entry in AUDIT if LATENT_CODES in entry.get("arrays", {})]
    assert len(with_codes) == 3 + 3 * 2  # round 1's QUERY, then the next codes of rounds 1 and 2
    for entry in with_codes:
        assert entry["arrays"] == {LATENT_CODES: (64, 16)}
        assert entry["anchors"] == {ANCHOR_CODES: (5, 16), ANCHOR_POSITIONS: (5,)}
    assert all("anchors" not in entry for entry in AUDIT if entry not in with_codes)
    ids, views = anchor_samples(config, scenario_dataset(config)), scenario_dataset(config).views
    for m in range(3):
        own_view = normalise_view(views[m], view_normalisation(config, m))
        np.testing.assert_array_equal(modality_data(config, m).anchors, own_view[ids])
    assert all("frames" in row for row in rows)
