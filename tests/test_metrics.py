"""Tests for otm_fed.metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from otm_fed.metrics import ari, clustering_accuracy, clustering_scores, code_spread, kmeans_scores, nmi, purity


def _from_confusion(table: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Label vectors whose (cluster, class) count table is ``table``."""
    y_true, y_pred = [], []
    for cluster, row in enumerate(table):
        for cls, count in enumerate(row):
            y_true += [cls] * count
            y_pred += [cluster] * count
    return np.array(y_true), np.array(y_pred)


def _brute_force_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best accuracy over all injective maps of clusters to classes (padded with dummies)."""
    classes, clusters = np.unique(y_true), np.unique(y_pred)
    targets = list(classes) + [None] * max(0, len(clusters) - len(classes))
    best = 0
    for perm in itertools.permutations(targets, len(clusters)):
        mapping = dict(zip(clusters, perm))
        best = max(best, sum(mapping[p] == t for p, t in zip(y_pred, y_true)))
    return best / len(y_true)


def test_relabelled_perfect_clustering() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([5, 5, 9, 9, -1, -1, -1])
    scores = clustering_scores(y_true, y_pred)
    assert scores == pytest.approx({"purity": 1.0, "acc": 1.0, "nmi": 1.0, "ari": 1.0})


def test_known_confusion_matrix() -> None:
    # rows: clusters, columns: classes
    y_true, y_pred = _from_confusion([[5, 1, 0], [4, 0, 0], [0, 2, 8]])
    assert purity(y_true, y_pred) == pytest.approx((5 + 4 + 8) / 20)
    # best one-to-one map: cluster0->class0 (5), cluster1->class1 (0), cluster2->class2 (8)
    # or cluster0->class1 (1), cluster1->class0 (4), cluster2->class2 (8): 13 in both cases
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(13 / 20)


def test_more_clusters_than_classes() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    assert purity(y_true, y_pred) == 1.0
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_fewer_clusters_than_classes() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.zeros(6, dtype=int)
    assert purity(y_true, y_pred) == pytest.approx(2 / 6)
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(2 / 6)


def test_acc_matches_brute_force_and_bounds() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(1, 15))
        y_true = rng.integers(0, rng.integers(1, 5), size=n)
        y_pred = rng.integers(0, rng.integers(1, 5), size=n) * 3 + 7
        acc = clustering_accuracy(y_true, y_pred)
        assert acc == pytest.approx(_brute_force_acc(y_true, y_pred))
        majority = np.bincount(y_true).max() / n
        assert purity(y_true, y_pred) >= majority - 1e-12
        assert purity(y_true, y_pred) >= acc - 1e-12


def test_nmi_ari_agree_with_sklearn() -> None:
    rng = np.random.default_rng(1)
    for _ in range(10):
        y_true = rng.integers(0, 4, size=60)
        y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, 5, size=60))
        assert nmi(y_true, y_pred) == pytest.approx(normalized_mutual_info_score(y_true, y_pred))
        assert ari(y_true, y_pred) == pytest.approx(adjusted_rand_score(y_true, y_pred))


@pytest.mark.parametrize("fn", [purity, clustering_accuracy, nmi, ari, clustering_scores])
def test_length_mismatch_and_empty(fn) -> None:
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        fn(np.array([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([]), np.array([]))


def test_kmeans_scores_on_separated_blobs() -> None:
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    y_true = np.repeat(np.arange(4), 25)
    codes = centres[y_true] + 0.5 * rng.normal(size=(100, 2))
    scores = kmeans_scores(codes, y_true, n_clusters=4)
    assert set(scores) == {"purity", "acc", "nmi", "ari"}
    assert all(value == pytest.approx(1.0) for value in scores.values())
    assert kmeans_scores(codes, y_true, 4, seed=0) == scores


def test_kmeans_scores_validation() -> None:
    codes = np.zeros((4, 2))
    y = np.array([0, 0, 1, 1])
    codes_nan = codes.copy()
    codes_nan[1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        kmeans_scores(codes_nan, y, 2)
    with pytest.raises(ValueError, match="differ in length"):
        kmeans_scores(codes, y[:3], 2)
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_scores(codes, y, 5)


def test_code_spread_measures_scale_and_effective_dimension():
    rng = np.random.default_rng(0)
    flat = np.zeros((4000, 10))
    flat[:, :3] = rng.standard_normal((4000, 3))  # spread evenly over 3 of 10 directions
    spread = code_spread(flat)
    assert spread["effective_dimension"] == pytest.approx(3.0, rel=0.05)
    assert spread["rms_norm"] == pytest.approx(np.sqrt(3.0), rel=0.05)
    scaled = code_spread(5.0 * flat + 7.0)  # scale and shift: same shape, 5x the norm
    assert scaled["effective_dimension"] == pytest.approx(spread["effective_dimension"], rel=1e-9)
    assert scaled["rms_norm"] == pytest.approx(5.0 * spread["rms_norm"], rel=1e-9)
    line = np.outer(rng.standard_normal(100), rng.standard_normal(10))
    assert code_spread(line)["effective_dimension"] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="2-d"):
        code_spread(np.ones(5))


def test_nmi_of_a_perfect_clustering_is_exactly_one():
    """scikit-learn gives 1.0000000000000002 on these 33 labels; the wire refuses scores above 1."""
    from otm_fed.metrics import nmi

    labels = np.random.default_rng(0).integers(0, 10, 33)
    assert nmi(labels, labels) == 1.0
