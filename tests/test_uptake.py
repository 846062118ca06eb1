"""How an agent takes up its target: the pulls, the flow weight and the guard."""

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from otm_fed.losses import LossWeights, local_loss
from otm_fed.config import resolve_config
from otm_fed.mixer import MixResult
from otm_fed.uptake import GUARD_Z, batch_neighbours, cluster_strength, guard_weight, neighbour_agreement
from server.strategy import OTMStrategy


def clustered(n: int = 120, d: int = 8, c: int = 4, spread: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 3 * rng.normal(size=(c, d))
    return centres[np.arange(n) % c] + spread * rng.normal(size=(n, d))


def test_the_squared_pull_is_eq_6_and_zero_at_its_target():
    codes = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    terms = local_loss(codes, codes, codes, LossWeights(beta=2.0), projected_mix=codes + 1.0)
    assert terms["latent_matching"].item() == pytest.approx(2.0 * 4.0)
    assert local_loss(codes, codes, codes, LossWeights(), projected_mix=codes)["latent_matching"].item() == 0.0


def test_batch_neighbours_are_each_rows_nearest_other_rows():
    points = np.random.default_rng(0).normal(size=(60, 300))
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(batch_neighbours(points, 5), np.argsort(distances, axis=1, kind="stable")[:, :5])


def test_neighbour_agreement_is_one_for_the_same_rows_and_at_chance_for_unrelated_ones():
    x = clustered(120)
    share, z = neighbour_agreement(x, x @ ortho_group.rvs(8, random_state=0) * 3 + 1, 5)
    assert share == pytest.approx(1.0) and z > 20
    rng = np.random.default_rng(1)
    z_unrelated = [neighbour_agreement(rng.normal(size=(120, 8)), rng.normal(size=(120, 8)), 5)[1] for _ in range(20)]
    assert abs(np.mean(z_unrelated)) < 1.0 and max(z_unrelated) < GUARD_Z + 1.5


def test_the_guard_refuses_random_codes_and_accepts_the_views_own_rotated_codes():
    inputs = clustered(128, d=20, c=4, seed=3)
    codes = inputs[:, :8] + 0.1
    random = guard_weight(inputs, np.random.default_rng(4).normal(size=(128, 8)), 5)
    assert random["target_weight"] == 0.0 and random["target_agreement_z"] < GUARD_Z
    own = guard_weight(inputs, codes @ ortho_group.rvs(8, random_state=5), 5)
    assert own["target_weight"] == 1.0 and own["target_agreement_z"] > GUARD_Z


def test_the_flow_sends_the_mix_back_only_to_the_modality_the_others_can_teach():
    """Modality 0 holds tight clusters, modality 1 the same rows loosely: through the true plans
    the others' codes are better clustered than 1's own and worse than 0's, so once a window of
    readings is full 1 takes the mix back and 0 only gives (a teacher); without target-flow both
    take it every round."""
    tight = clustered(120, spread=0.1, seed=6)
    loose = tight + 3.0 * np.random.default_rng(7).normal(size=tight.shape)
    assert cluster_strength(tight, 4, 0) > 0.8 > cluster_strength(loose, 4, 0)
    for flow, receiving in (("false", [[0, 1], [0, 1], [0, 1]]), ("true", [[], [], [1]])):
        strategy = OTMStrategy(resolve_config("synthetic", {"target-flow": flow, "gate-window": "3"}), n_modalities=2,
                               n_clusters=4, progress=lambda line: None)
        strategy.mixed_modalities, strategy.mixed_codes = [0, 1], {0: tight, 1: loose}
        strategy.mix_result = MixResult((tight + loose) / 2, [np.eye(120) / 120] * 2, np.ones((2, 120, 8)), None)
        # The flow decides on a full window of readings, as the gate does: nothing flows before it.
        assert [strategy.receiving_modalities(server_round) for server_round in (1, 2, 3)] == receiving
    # Through the true plans, the others' codes onto 0's rows are 1's codes and vice versa.
    assert strategy.flow_readings[0] == pytest.approx(strategy.flow_readings[1][::-1])
