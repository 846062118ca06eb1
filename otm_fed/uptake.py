"""Whether a modality takes up its target Z~_m (eq. 4), judged without labels.

The paper pulls every agent toward its target alike, ``beta ||f_m(X_m) - Z~_m||^2`` (eq. 6). A
target helps a view that is worse than it and drags one that is better, so the target can be
judged before it is taken up:

* the direction of flow (``target-flow``, decided by the server, which holds every modality's
  codes: ``OTMStrategy.receiving_modalities``): a modality takes the mix back only while the
  others' codes, carried onto its rows, were better clustered than its own over the gate's window
  (``cluster_strength``): a strong view is not pulled toward a weaker mix.
* the guard (``target-guard``, decided by the agent): it takes no target whose neighbourhoods agree with its own input's no better
  than chance (``neighbour_agreement``): a target built on a wrong correspondence carries nothing
  of the agent's own rows.

numpy and scikit-learn only (imported where used); each statistic costs about a k-means of one
batch (N_m rows) per round.
"""

from __future__ import annotations

import numpy as np

GUARD_Z = 2.0  # "clearly above chance": the agreement more than two standard errors above its null
READINGS = ("target_agreement", "target_agreement_z", "target_weight")
"""What ``guard_weight`` reports beside the loss terms of a TRAIN reply: readings, not losses."""


def batch_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest other rows (N x k ids) in Euclidean distance, from the N x N Gram form
    (an N x N x D difference array would take about 1 GB at N = 256 rows of 1878 features; POT's
    helpers are not imported: the agent's process pays for every import on every message)."""
    norms = (points * points).sum(1)
    squared = norms[:, None] + norms[None, :] - 2.0 * points @ points.T
    np.fill_diagonal(squared, np.inf)
    return np.argsort(squared, axis=1, kind="stable")[:, :k]


def neighbour_agreement(a: np.ndarray, b: np.ndarray, k: int) -> tuple[float, float]:
    """(mean overlap of the k-NN sets of a and b, row by row, as a share of k; its z-score against
    unrelated rows). Unrelated k-NN sets of N - 1 candidates overlap by k / (N - 1) on average
    (hypergeometric), with variance k (k/(N-1)) (1 - k/(N-1)) (N-1-k)/(N-2) / k^2 per row; the
    N rows are treated as independent, so the z-score is the mean's distance from k / (N - 1) in
    standard errors of a mean of N rows."""
    n = len(a)
    k = min(k, n - 2)
    ids_a, ids_b = batch_neighbours(a, k), batch_neighbours(b, k)
    overlap = np.array([len(np.intersect1d(row_a, row_b, assume_unique=True)) for row_a, row_b in zip(ids_a, ids_b)])
    share = overlap / k
    p = k / (n - 1)
    variance = p * (1 - p) * (n - 1 - k) / (n - 2) / k
    return float(share.mean()), float((share.mean() - p) / np.sqrt(variance / n))


def cluster_strength(points: np.ndarray, n_clusters: int, seed: int) -> float:
    """The silhouette of a seeded k-means of ``points`` into C clusters: about 1 for tight,
    separated groups, about 0 for points without cluster structure. Label-free."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n_clusters = min(n_clusters, len(points) - 1)
    if n_clusters < 2:
        return 0.0
    labels = KMeans(n_clusters, n_init=3, random_state=seed).fit_predict(points)
    return float(silhouette_score(points, labels)) if len(np.unique(labels)) > 1 else 0.0


def guard_weight(inputs: np.ndarray, target: np.ndarray, k: int) -> dict[str, float]:
    """Whether the agent takes its target this round (``target_weight``, 1 or 0, multiplying its
    ``beta``), with what it was decided on: the target's k-NN agreement with the agent's own
    input rows (``neighbour_agreement``) must lie more than GUARD_Z standard errors above chance."""
    share, z = neighbour_agreement(target, inputs, k)
    return {"target_agreement": share, "target_agreement_z": z, "target_weight": float(z > GUARD_Z)}
