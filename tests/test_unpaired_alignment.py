"""The unpaired-alignment benchmark's measurements: FOSCTTM, label transfer, class mass, SCOT's
geodesic structures and coupling, the frames' scores, and its refusals."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path[:0] = [str(BENCHMARKS)]

import unpaired_alignment as ua  # noqa: E402


def rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


def test_foscttm_is_zero_for_identical_views_and_about_half_for_independent_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    assert ua.foscttm(x, x) == 0.0
    assert ua.foscttm(x, rng.normal(size=(300, 5))) == pytest.approx(0.5, abs=0.03)


def test_foscttm_by_hand_on_four_rows():
    a = np.array([[0.0], [1.0], [2.0], [3.0]])
    b = np.array([[0.1], [2.6], [1.9], [10.0]])
    # a_i against b: 0, 2 (b_0, b_2 at 0.9 < 1.6), 0, 3 of 3 others closer; b_j against a: 0, 2, 0, 0
    assert ua.foscttm(a, b) == pytest.approx(((0 + 0) + (2 + 2) + (0 + 0) + (3 + 0)) / (2 * 3) / 4)
    # a tie with the true match is not closer
    assert ua.foscttm(np.array([[0.0], [2.0]]), np.array([[1.0], [1.0]])) == 0.0


def test_label_transfer_and_class_mass_are_one_on_identical_labelled_views():
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(40, 3)), np.repeat(np.arange(4), 10)
    assert ua.label_transfer(x, x, labels, labels) == 1.0
    mass, chance = ua.class_mass(np.eye(40) / 40, labels, labels)
    assert mass == pytest.approx(1.0) and chance == pytest.approx(0.25)


def test_geodesic_distances_by_hand():
    # edges 0-1 (length 1, stated one way) and 1-2 (length 2); 3 unreachable: at the largest finite, 3
    graph = csr_matrix((np.array([1.0, 2.0]), (np.array([0, 2]), np.array([1, 1]))), shape=(4, 4))
    expected = np.array([[0, 1, 3, 3], [1, 0, 2, 3], [3, 2, 0, 3], [3, 3, 3, 0]]) / 3.0
    np.testing.assert_allclose(ua.geodesic_distances(graph), expected)


def test_connectivity_graph_counts_the_row_itself_among_its_k_neighbours():
    rng = np.random.default_rng(2)
    graph = ua.knn_graph(rng.normal(size=(20, 6)), 4).toarray()
    assert (graph.sum(1) == 4).all() and (np.diag(graph) == 1).all()
    distance_graph = ua.knn_graph(rng.normal(size=(20, 6)), 4, mode="distance").toarray()
    assert (np.diag(distance_graph) == 0).all() and ((distance_graph > 0).sum(1) == 4).all()


def test_scot_recovers_a_permuted_rotated_copy_of_a_clustered_curve():
    rng = np.random.default_rng(0)
    sizes = (50, 30, 20)  # unequal clusters: the curve cannot be matched reversed
    t = np.concatenate([start + 0.15 * rng.random(size) for start, size in zip((0.0, 0.4, 0.8), sizes)])
    labels = np.repeat(np.arange(3), sizes)
    curve = np.stack([np.cos(3 * t), np.sin(3 * t), t, t**2, np.cos(5 * t)], axis=1) + 2.0
    copy = curve @ rotation(5, rng)
    order = rng.permutation(len(t))
    coupling, _, converged = ua.scot_coupling(curve, copy[order], 10, 5e-3)
    coupling = coupling[:, np.argsort(order)]  # back to co-registered rows
    target = ua.unit_rows(copy)
    projected = ua.barycentric_projection(coupling, target)
    assert converged and ua.foscttm(projected, target) < 0.1
    assert ua.label_transfer(projected, target, labels, labels) == 1.0


def test_the_frames_recover_a_rotated_scaled_shifted_copy_of_clustered_codes():
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=4.0, size=(3, 4))
    labels = np.repeat(np.arange(3), (30, 20, 10))
    codes = centres[labels] + rng.normal(size=(60, 4)) * np.array([2.0, 1.0, 0.5, 0.25])
    pair, = ua.frames_pairs({0: codes, 1: 3.0 * codes @ rotation(4, rng) + 1.0}, labels, 4, rng)
    assert pair["foscttm_plan"] == 0.0 and pair["foscttm_rigid"] == pytest.approx(0.0, abs=1e-12)
    assert pair["class_mass"] == pytest.approx(1.0) and pair["label_transfer_rigid"] == 1.0
    ceiling, = ua.ceiling_pairs({0: codes, 1: codes @ rotation(4, rng)}, labels)
    assert ceiling["foscttm_rigid"] == 0.0 and ceiling["foscttm_plan"] == 0.0


@pytest.mark.parametrize("argv, message", [
    (["--datasets", "snare-seq,cora"], "unknown data set cora"),
    (["--seeds", "0,one"], "seeds must be a comma list of integers"),
    (["--methods", "scot,magic"], "unknown method magic"),
])
def test_bad_input_is_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit):
        ua.main(argv)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in error and message in error
