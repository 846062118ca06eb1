"""The label-free fit on codes whose clusters come in antipodal pairs, where the mirror frame -Q
matches every cluster to the wrong one."""

import numpy as np

from otm_fed.frames import align_frames
from otm_fed.transport import exact_ot_plan, squared_distances, uniform

GATE_THRESHOLD = 0.25  # the default gate-threshold


def antipodal_views(n: int, d: int, seed: int, swap_spreads: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two views of the same n samples: 6 clusters at +-c_j, tight (0.3) at +c_j and loose (1.2) at
    -c_j in view 0; in view 1 the same, or with ``swap_spreads`` each cluster has its antipode's
    spread (then the mirror frame fits view 1 to view 0 better than the true frame I)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, d))
    centres = np.concatenate([centres, -centres])
    spreads = np.array([0.3, 0.3, 0.3, 1.2, 1.2, 1.2])
    labels = np.arange(n) % 6
    view0 = centres[labels] + rng.normal(size=(n, d)) * spreads[labels, None]
    view1_spreads = np.roll(spreads, 3) if swap_spreads else spreads
    view1 = centres[labels] + rng.normal(size=(n, d)) * view1_spreads[labels, None]
    return view0, view1, labels


def plan_class_mass(alignment, view0: np.ndarray, view1: np.ndarray, labels0: np.ndarray,
                    labels1: np.ndarray) -> float:
    rows, cols, values = exact_ot_plan(squared_distances(alignment.frames[1].to_common(view1),
                                                         alignment.frames[0].to_common(view0)),
                                       uniform(len(view1)), uniform(len(view0)))
    return float(values[labels1[rows] == labels0[cols]].sum())


def test_the_fit_leaves_a_mirrored_warm_start_for_the_better_true_frame():
    view0, view1, labels = antipodal_views(192, 6, seed=3, swap_spreads=False)
    alignment = align_frames({0: view0, 1: view1}, {1: -np.eye(6)}, 10, np.random.default_rng(0))
    assert np.trace(alignment.frames[1].rotation) / 6 > 0.9  # back near I, not at the mirror -I
    assert plan_class_mass(alignment, view0, view1, labels, labels) > 0.95


def test_no_label_free_reading_tells_a_mirrored_pairing_from_the_true_one():
    """The same two clouds of codes under two pairings of their samples: sample i of view 1 is
    sample i of view 0 (truth I), or it is a sample of the antipodal cluster (truth -I; classes
    keep their spread across views). The server sees only the clouds, so every reading is the
    same, and the best fit is right under one pairing and wrong on every cluster under the other.
    A gate that opens on the second must open on the first: this failure is beyond a label-free gate."""
    view0, view1, labels = antipodal_views(192, 6, seed=3, swap_spreads=True)
    alignment = align_frames({0: view0, 1: view1}, {}, 10, np.random.default_rng(0))
    antipodes = (labels + 3) % 6
    assert alignment.confidences[1] > GATE_THRESHOLD
    assert plan_class_mass(alignment, view0, view1, labels, antipodes) > 0.95
    assert plan_class_mass(alignment, view0, view1, labels, labels) < 1 / 6
