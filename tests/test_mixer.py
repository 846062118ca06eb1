"""The stochastic FGW barycenter mixer (paper eq. 1-4, Algorithms 1-2) against POT and exact cases."""

import numpy as np
import ot
import pytest
import torch

from otm_fed.clustering import clustering_loss, clustering_plan, gaussian_kernel, modality_gradients
from otm_fed.mixer import OTMixer, barycenter_objective, fgw_barycenter, fgw_distance, mix, sample_masks
from otm_fed.transport import exact_ot_plan, fgw_objective, pairwise_distances, solve_fgw_plan, squared_distances
from otm_fed.plans import SparsePlan, decode_plan, encode_plan, project_to_modality


def clustered(n: int, d: int = 6, n_clusters: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((n_clusters, d))
    return centres[np.arange(n) % n_clusters] + 0.3 * rng.standard_normal((n, d))


def problem(n_b: int, n_m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z, z_m = rng.standard_normal((n_b, 4)), rng.standard_normal((n_m, 4))
    return squared_distances(z, z_m), pairwise_distances(z), pairwise_distances(z_m)


@pytest.mark.parametrize("n_b,n_m", [(20, 35), (40, 40), (33, 12)])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_plan_marginals_match_uniform_weights(n_b, n_m, alpha):
    feature, a, a_m = problem(n_b, n_m, seed=n_b + n_m)
    plan, _ = solve_fgw_plan(feature, a, a_m, alpha)
    assert plan.min() >= 0
    np.testing.assert_allclose(plan.sum(1), np.full(n_b, 1 / n_b), atol=1e-6)
    np.testing.assert_allclose(plan.sum(0), np.full(n_m, 1 / n_m), atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_fgw_value_and_objective_match_pot(seed):
    rng = np.random.default_rng(seed)
    n_b, n_m = (int(v) for v in rng.integers(8, 50, size=2))
    alpha = float(rng.random())
    feature, a, a_m = problem(n_b, n_m, seed)
    plan, value = solve_fgw_plan(feature, a, a_m, alpha)
    # POT's alpha weights the structure term: alpha_pot = 1 - alpha.
    pot_plan, log = ot.gromov.fused_gromov_wasserstein(feature, a, a_m, alpha=1 - alpha, log=True)
    assert fgw_objective(feature, a, a_m, pot_plan, alpha) == pytest.approx(float(log["fgw_dist"]), abs=1e-6)
    assert value == pytest.approx(fgw_objective(feature, a, a_m, plan, alpha), abs=1e-9)
    assert value == pytest.approx(float(log["fgw_dist"]), abs=1e-6)


def test_objective_of_pure_terms():
    feature, a, a_m = problem(10, 10, seed=3)
    plan = np.eye(10) / 10
    assert fgw_objective(feature, a, a_m, plan, 1.0) == pytest.approx(np.trace(feature) / 10)
    brute = sum((a[i, k] - a_m[i, k]) ** 2 for i in range(10) for k in range(10)) / 100
    assert fgw_objective(feature, a, a_m, plan, 0.0) == pytest.approx(brute)


def test_identical_copies_give_zero_objective_and_the_codes_back():
    codes = clustered(30)
    result = fgw_barycenter([codes, codes, codes], alpha=0.5, max_outer=3, init="random", seed=1)
    assert result.objective == pytest.approx(0.0, abs=1e-8)
    # Up to a permutation: every barycenter row is one of the codes, each used once.
    matches = squared_distances(result.barycenter, codes).argmin(1)
    assert sorted(matches) == list(range(30))
    np.testing.assert_allclose(result.barycenter, codes[matches], atol=1e-8)


def test_plan_recovers_a_hidden_permutation():
    codes = clustered(40, seed=2)
    rng = np.random.default_rng(5)
    first, second = rng.permutation(40), rng.permutation(40)
    plan, value = fgw_distance(codes[first], codes[second], alpha=0.5)
    assert value == pytest.approx(0.0, abs=1e-9)
    # Row i of the first copy is sample first[i]; its mass must land on the row of the second
    # copy that holds the same sample.
    where_in_second = np.argsort(second)
    assert np.array_equal(plan.argmax(1), where_in_second[first])


def test_pure_gw_recovers_permutation_without_shared_coordinates():
    codes = clustered(30, seed=4)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 6)))
    order = np.random.default_rng(1).permutation(30)
    plan, _ = fgw_distance(codes, codes[order] @ rotation + 5.0, alpha=0.0)
    assert np.array_equal(plan.argmax(1), np.argsort(order))


def test_barycenter_never_worse_than_its_start_and_uses_unequal_sizes():
    rng = np.random.default_rng(0)
    codes = [clustered(40, seed=0), clustered(25, seed=1) @ np.linalg.qr(rng.standard_normal((6, 6)))[0],
             clustered(31, seed=2) * 0.5]
    result = fgw_barycenter(codes, alpha=0.5, barycenter_size=20, max_outer=6, seed=3)
    assert result.barycenter.shape == (20, 6)
    assert result.objective <= result.initial_objective + 1e-12
    assert result.objective == pytest.approx(min(result.objective_history))
    for plan, z in zip(result.transport_plans, codes):
        np.testing.assert_allclose(plan.sum(1), np.full(20, 1 / 20), atol=1e-9)
        np.testing.assert_allclose(plan.sum(0), np.full(len(z), 1 / len(z)), atol=1e-9)


def test_barycenter_update_keeps_scale():
    """diag(1/mu_B) T_m Z_m is a barycentric projection: with identical modalities the update
    is the identity, so the codes' norm is preserved (the reference code's missing N_B factor
    would shrink it by N_B)."""
    codes = clustered(25, seed=7)
    result = fgw_barycenter([codes, codes], alpha=0.5, max_outer=2)
    assert np.linalg.norm(result.barycenter) == pytest.approx(np.linalg.norm(codes), rel=1e-9)


def test_same_seed_same_result_and_float32_in_float32_out():
    codes = [clustered(20, seed=0).astype(np.float32), clustered(20, seed=1).astype(np.float32)]
    mixer = OTMixer(alpha=0.4, max_outer=2)
    first, second = mixer(codes, seed=7), mixer(codes, seed=7)
    assert first.mixed_barycenter.dtype == np.float32
    np.testing.assert_array_equal(first.mixed_barycenter, second.mixed_barycenter)
    assert not np.array_equal(first.masks, mixer(codes, seed=8).masks)
    as_tensors = mixer([torch.from_numpy(c) for c in codes], seed=7)
    np.testing.assert_array_equal(as_tensors.mixed_barycenter, first.mixed_barycenter)


def test_binary_masks_partition_entries_with_lambda_frequencies():
    weights = (0.2, 0.5, 0.3)
    masks = sample_masks(3, (200, 50), weights, "binary", seed=0)
    assert set(np.unique(masks)) == {0.0, 1.0}
    np.testing.assert_array_equal(masks.sum(0), np.ones((200, 50)))
    frequencies = masks.mean(axis=(1, 2))
    # 10,000 Bernoulli draws per modality: standard error <= 0.005.
    np.testing.assert_allclose(frequencies, weights, atol=0.02)


def test_dirichlet_masks_are_soft_and_sum_to_one():
    masks = sample_masks(4, (30, 8), None, "dirichlet", seed=1)
    np.testing.assert_allclose(masks.sum(0), 1.0, atol=1e-12)
    assert ((masks > 0) & (masks < 1)).mean() > 0.9


def test_no_mask_is_the_weighted_barycenter():
    rng = np.random.default_rng(0)
    codes = [clustered(15, seed=0), clustered(18, seed=1)]
    weights = (0.3, 0.7)
    mixer = OTMixer(alpha=0.5, weights=weights, mask_mode="none", max_outer=2)
    result = mixer(codes, seed=rng)
    plans = result.transport_plans
    expected = 15 * (0.3 * plans[0] @ codes[0] + 0.7 * plans[1] @ codes[1])
    np.testing.assert_allclose(result.mixed_barycenter, expected, atol=1e-5)


def test_projection_of_identical_modality_returns_its_codes():
    codes = clustered(24, seed=3)
    order = np.random.default_rng(0).permutation(24)
    plan, _ = fgw_distance(codes, codes[order], alpha=0.5)
    masks = np.ones((1, 24, 6))
    mixed = mix([codes[order]], [plan], masks)
    np.testing.assert_allclose(mixed, codes, atol=1e-10)
    np.testing.assert_allclose(project_to_modality(mixed, plan), codes[order], atol=1e-10)


def test_projection_uses_n_m_factor_for_unequal_sizes():
    rng = np.random.default_rng(0)
    plan = np.outer(np.full(10, 0.1), np.full(4, 0.25))
    mixed = rng.standard_normal((10, 3))
    projected = project_to_modality(mixed, plan)
    np.testing.assert_allclose(projected, np.tile(mixed.mean(0), (4, 1)), atol=1e-12)


def test_sparse_plan_round_trips_and_exact_plans_are_sparse():
    rng = np.random.default_rng(0)
    for n_b, n_m in [(30, 30), (17, 41), (50, 9)]:
        cost = rng.random((n_b, n_m))
        rows, cols, values = exact_ot_plan(cost, np.full(n_b, 1 / n_b), np.full(n_m, 1 / n_m))
        plan = np.zeros((n_b, n_m))
        plan[rows, cols] = values
        reference = ot.emd(np.full(n_b, 1 / n_b), np.full(n_m, 1 / n_m), cost)
        assert (plan * cost).sum() == pytest.approx((reference * cost).sum(), abs=1e-12)
        encoded = encode_plan(plan)
        assert encoded.nnz <= n_b + n_m - 1
        assert encoded.rows.dtype == np.int64 and encoded.values.dtype == np.float64
        np.testing.assert_array_equal(decode_plan(encoded), plan)


def test_sparse_plan_decoding_refuses_bad_indices():
    with pytest.raises(ValueError, match="outside"):
        decode_plan(SparsePlan(np.array([0, 5]), np.array([0, 1]), np.array([0.5, 0.5]), (3, 3)))
    with pytest.raises(ValueError, match="repeated"):
        decode_plan(SparsePlan(np.array([1, 1]), np.array([2, 2]), np.array([0.5, 0.5]), (3, 3)))


def test_clustering_regulariser_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    codes = [clustered(12, d=3, seed=0), clustered(9, d=3, seed=1)]
    result = OTMixer(alpha=0.5, barycenter_size=10, max_outer=2)(codes, seed=rng)
    plans, masks = result.transport_plans, result.masks

    mixed = mix(codes, plans, masks)
    plan = clustering_plan(gaussian_kernel(torch.as_tensor(mixed), 2.0).numpy(), 3)

    def loss_of(z_list, plan=plan):
        return clustering_loss(torch.as_tensor(mix(z_list, plans, masks)), 3, 2.0, plan)

    gradients = modality_gradients(codes, plans, masks, lambda z: clustering_loss(z, 3, 2.0))
    # The server solves the GW plan at the current codes; the envelope theorem makes the loss
    # with that plan held fixed have the same gradient, which finite differences can check.
    step = 1e-6
    for m in range(2):
        for (i, k) in [(0, 0), (3, 2), (len(codes[m]) - 1, 1)]:
            plus = [z.copy() for z in codes]
            minus = [z.copy() for z in codes]
            plus[m][i, k] += step
            minus[m][i, k] -= step
            numeric = (loss_of(plus).item() - loss_of(minus).item()) / (2 * step)
            assert gradients[m][i, k] == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_modality_gradient_of_a_linear_loss_is_the_pushed_back_weight():
    rng = np.random.default_rng(1)
    codes = [rng.standard_normal((8, 3)), rng.standard_normal((6, 3))]
    result = OTMixer(alpha=0.5, barycenter_size=5, max_outer=1)(codes, seed=0)
    weight = rng.standard_normal((5, 3))
    gradients = modality_gradients(codes, result.transport_plans, result.masks,
                                   lambda z: (torch.as_tensor(weight) * z).sum())
    for m, plan in enumerate(result.transport_plans):
        np.testing.assert_allclose(gradients[m], 5 * plan.T @ (result.masks[m] * weight), atol=1e-12)


@pytest.mark.parametrize(
    "codes,kwargs,message",
    [
        ([np.array([[np.nan, 0.0]]), np.ones((2, 2))], {}, "NaN or Inf"),
        ([np.array([[np.inf, 0.0]]), np.ones((2, 2))], {}, "NaN or Inf"),
        ([np.ones((3, 2)), np.ones((3, 4))], {}, "latent width"),
        ([np.ones((0, 2)), np.ones((3, 2))], {}, "empty"),
        ([], {}, "at least one"),
        ([np.ones(3)], {}, "2-D"),
        ([np.ones((3, 2))], {"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
        ([np.ones((3, 2))], {"alpha": -0.1}, r"alpha must lie in \[0, 1\]"),
        ([np.ones((3, 2)), np.ones((3, 2))], {"weights": (-0.5, 1.5)}, "non-negative"),
        ([np.ones((3, 2)), np.ones((3, 2))], {"weights": (0.5, 0.6)}, "sum to 1"),
        ([np.ones((3, 2)), np.ones((3, 2))], {"weights": (1.0,)}, "one weight per modality"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(codes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fgw_barycenter(codes, **kwargs)


def test_bad_mixer_configuration_is_refused():
    with pytest.raises(ValueError, match="mask mode"):
        OTMixer(mask_mode="soft")
    with pytest.raises(ValueError, match="alpha"):
        OTMixer(alpha=2.0)


def test_shared_objective_is_zero_for_identical_modalities_and_positive_otherwise():
    codes = clustered(20, seed=0)
    assert barycenter_objective(codes, [codes, codes], alpha=0.5) == pytest.approx(0.0, abs=1e-9)
    assert barycenter_objective(codes, [codes, clustered(20, seed=1)], alpha=0.5) > 0.1
