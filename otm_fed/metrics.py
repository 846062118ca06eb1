"""Clustering quality metrics: purity, Hungarian accuracy, NMI, ARI and k-means scoring.

scikit-learn and ``scipy.optimize`` are imported where a score needs them (about 1.5 s
together), not at import: a deployed agent starts a process per message and evaluates on few.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ari", "clustering_accuracy", "clustering_scores", "kmeans_scores", "nmi", "purity"]


def _check_labelings(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both labelings as 1-D arrays of equal, non-zero length."""
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} vs {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("y_true and y_pred are empty")
    return y_true, y_pred


def _contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts ``[cluster, class]`` of samples per (predicted cluster, true class) pair."""
    _, classes = np.unique(y_true, return_inverse=True)
    _, clusters = np.unique(y_pred, return_inverse=True)
    table = np.zeros((clusters.max() + 1, classes.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, classes), 1)
    return table


def purity(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of samples whose cluster's majority class is their own class."""
    y_true, y_pred = _check_labelings(y_true, y_pred)
    return float(_contingency(y_true, y_pred).max(axis=1).sum() / y_true.size)


def clustering_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy under the best one-to-one cluster-to-class map (Hungarian algorithm).

    With unequal numbers of clusters and classes, unmatched clusters count as errors.
    """
    from scipy.optimize import linear_sum_assignment

    y_true, y_pred = _check_labelings(y_true, y_pred)
    table = _contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / y_true.size)


def nmi(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Normalised mutual information (arithmetic normalisation, as scikit-learn), in [0, 1]:
    scikit-learn's rounding can give 1 + 2e-16 for a perfect clustering, which the wire refuses."""
    from sklearn.metrics import normalized_mutual_info_score

    y_true, y_pred = _check_labelings(y_true, y_pred)
    return float(np.clip(normalized_mutual_info_score(y_true, y_pred), 0.0, 1.0))


def ari(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Adjusted Rand index."""
    from sklearn.metrics import adjusted_rand_score

    y_true, y_pred = _check_labelings(y_true, y_pred)
    return float(adjusted_rand_score(y_true, y_pred))


def clustering_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All four scores: ``purity``, ``acc``, ``nmi``, ``ari``."""
    return {
        "purity": purity(y_true, y_pred),
        "acc": clustering_accuracy(y_true, y_pred),
        "nmi": nmi(y_true, y_pred),
        "ari": ari(y_true, y_pred),
    }


def kmeans_scores(
    codes: np.ndarray, y_true: np.ndarray, n_clusters: int, n_init: int = 10, seed: int = 0
) -> dict[str, float]:
    """Cluster ``codes`` (N x d) with seeded k-means and score against ``y_true``."""
    from sklearn.cluster import KMeans

    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D N x d array, got shape {codes.shape}")
    if codes.shape[0] != np.asarray(y_true).size:
        raise ValueError(f"codes and y_true differ in length: {codes.shape[0]} vs {np.asarray(y_true).size}")
    if not np.all(np.isfinite(codes)):
        raise ValueError(f"codes contain {int(np.count_nonzero(~np.isfinite(codes)))} non-finite values")
    if not 1 <= n_clusters <= codes.shape[0]:
        raise ValueError(f"n_clusters must be in 1..{codes.shape[0]}, got {n_clusters}")
    pred = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(codes)
    return clustering_scores(y_true, pred)


def code_spread(codes: np.ndarray) -> dict[str, float]:
    """How big and how many-dimensional a modality's codes are: ``rms_norm`` = sqrt(mean_i
    ||z_i - mean||^2), and ``effective_dimension`` = (sum_k l_k)^2 / sum_k l_k^2 over the
    eigenvalues l_k of their covariance (the participation ratio: k for codes spread evenly
    over k directions, 1 for codes on a line)."""
    centred = np.asarray(codes, dtype=np.float64)
    if centred.ndim != 2 or len(centred) < 2:
        raise ValueError(f"need a 2-d array of at least two codes, got shape {centred.shape}")
    centred = centred - centred.mean(0)
    eigenvalues = np.linalg.eigvalsh(centred.T @ centred / len(centred)).clip(min=0.0)
    total = eigenvalues.sum()
    if total == 0:
        return {"rms_norm": 0.0, "effective_dimension": 0.0}
    return {"rms_norm": float(np.sqrt(total)), "effective_dimension": float(total**2 / (eigenvalues**2).sum())}
