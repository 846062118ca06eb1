"""The label-free gate on a frame that matches every cluster to the wrong one."""

import numpy as np
import pytest

from otm_fed.frames import align_frames, standardise, wasserstein_procrustes
from otm_fed.transport import exact_ot_plan, squared_distances, uniform

GATE_THRESHOLD = 0.25  # the default gate-threshold


def mirrored_views(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two views of the same n samples: 6 clusters in antipodal pairs +-c_j; in view 1 each cluster
    has the spread its antipode has in view 0. The mirrored frame -I then fits view 1's batch to
    view 0's better than the true frame I, and matches every cluster to the wrong one."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, d))
    centres = np.concatenate([centres, -centres])
    spreads = np.array([0.3, 0.3, 0.3, 1.2, 1.2, 1.2])
    labels = np.arange(n) % 6
    noise = rng.normal(size=(n, d))
    return centres[labels] + noise * spreads[labels, None], centres[labels] + noise * np.roll(spreads, 3)[labels, None], labels


@pytest.mark.xfail(strict=True, reason="open: the confidence compares the fit with a structure-free copy of the "
                                       "codes, so a wrong frame that fits the batch well reads as confident; a "
                                       "rival-frame statistic (1 - W / W of the fit from -Q) lost correct openings")
def test_the_gate_reads_below_its_threshold_on_a_frame_that_matches_every_cluster_wrongly():
    view0, view1, labels = mirrored_views(192, 6, seed=3)
    x, y = ((z - standardise(z)[0]) / standardise(z)[1] for z in (view1, view0))
    (_, true_value), (mirrored, mirrored_value) = (wasserstein_procrustes(x, y, start)
                                                               for start in (np.eye(6), -np.eye(6)))
    assert mirrored_value < true_value  # the wrong frame is the better label-free fit
    alignment = align_frames({0: view0, 1: view1}, {1: mirrored}, 10, np.random.default_rng(0))
    rows, cols, _ = exact_ot_plan(squared_distances(alignment.frames[1].to_common(view1),
                                                    alignment.frames[0].to_common(view0)), uniform(192), uniform(192))
    assert np.mean(labels[rows] == labels[cols]) < 1 / 6  # worse than random
    assert alignment.confidences[1] < GATE_THRESHOLD
