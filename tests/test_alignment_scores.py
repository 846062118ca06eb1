"""Counterpart scores of a round whose mixed batches share few or no samples: measured only where
there is something to measure, never a stand-in number."""

import json

import numpy as np
import pytest

from otm_fed.alignment import alignment_scores

LABELS = np.array([0, 0, 1, 1, 0, 1, 0, 1])
PERFECT = np.eye(4) / 4  # barycenter point k carries batch row k: pair plans are the identity


def test_batches_sharing_no_sample_leave_every_counterpart_score_out():
    scores = alignment_scores([PERFECT, PERFECT], [np.arange(4), np.arange(4, 8)], LABELS)
    assert set(scores) == {"class_mass", "class_mass_chance"}
    # row i of the first batch sends all its mass to row i of the second: classes agree at i = 0 and 3
    assert scores["class_mass"] == pytest.approx(0.5) and scores["class_mass_chance"] == pytest.approx(0.5)
    json.dumps(scores, allow_nan=False)  # metrics.jsonl stays strict JSON


def test_counterpart_scores_average_only_the_pairs_that_share_samples():
    ids = [np.arange(4), np.arange(4), np.arange(4, 8)]  # the third batch shares no sample with the others
    scores = alignment_scores([PERFECT] * 3, ids, LABELS)
    assert scores["true_mass"] == pytest.approx(1.0) and scores["top1"] == 1.0  # pair (0, 1) alone, not 1/3
    assert scores["true_mass_chance"] == pytest.approx(1 / 4)
    assert scores["class_mass"] == pytest.approx((1.0 + 0.5 + 0.5) / 3)  # every pair counts here
