"""The exact shortcuts inside the FGW solver: warm-started assignments, incremental products,
sparse barycentric updates and the coinciding-modality plan give what the plain formulas give."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from otm_fed.mixer import barycentric_update, fgw_barycenter
from otm_fed.transport import assignment_potentials, pairwise_distances, solve_assignment, solve_fgw_plan, sparse_difference, squared_distances, structure_product, vertex_product


def assignment_cost(cost: np.ndarray, cols: np.ndarray) -> float:
    return float(cost[np.arange(len(cols)), cols].sum())


@pytest.mark.parametrize("seed", range(5))
def test_warm_started_assignment_is_optimal_for_any_potentials(seed):
    rng = np.random.default_rng(seed)
    cost = rng.standard_normal((60, 60))
    _, best = linear_sum_assignment(cost)
    for potentials in (None, rng.standard_normal(60), 100.0 * rng.standard_normal(60)):
        cols, _ = solve_assignment(cost, potentials)
        assert assignment_cost(cost, cols) == pytest.approx(assignment_cost(cost, best), abs=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_potentials_certify_the_assignment(seed):
    rng = np.random.default_rng(seed)
    cost = rng.random((50, 50))
    cols, used = solve_assignment(cost)
    col_potential = assignment_potentials(cost, cols, used)
    slack = cost - col_potential[None, :]
    row_potential = slack[np.arange(50), cols]
    reduced = slack - row_potential[:, None]
    assert reduced.min() >= -1e-12  # dual feasible ...
    np.testing.assert_allclose(reduced[np.arange(50), cols], 0.0, atol=1e-12)  # ... and tight
    # Reused on a perturbed cost, as between conditional-gradient steps: still exact.
    perturbed = cost + 0.05 * rng.random((50, 50))
    warm, _ = solve_assignment(perturbed, col_potential)
    _, cold = linear_sum_assignment(perturbed)
    assert assignment_cost(perturbed, warm) == pytest.approx(assignment_cost(perturbed, cold), abs=1e-12)


def test_sparse_difference_and_incremental_product_match_dense():
    rng = np.random.default_rng(0)
    n, m = 30, 30
    a, a_m = pairwise_distances(rng.standard_normal((n, 3))), pairwise_distances(rng.standard_normal((m, 3)))
    first = (np.arange(n), rng.permutation(m), np.full(n, 1.0 / n))
    second_cols = first[1].copy()
    second_cols[[0, 1, 2]] = second_cols[[2, 0, 1]]  # three rows move
    second = (np.arange(n), second_cols, np.full(n, 1.0 / n))

    def dense(vertex):
        plan = np.zeros((n, m))
        plan[vertex[0], vertex[1]] = vertex[2]
        return plan

    rows, cols, values = sparse_difference(second, first, m)
    assert len(rows) == 6
    difference = np.zeros((n, m))
    difference[rows, cols] = values
    np.testing.assert_array_equal(difference, dense(second) - dense(first))
    previous = (first, structure_product(a, a_m, first))
    np.testing.assert_allclose(vertex_product(a, a_m, second, previous), a @ dense(second) @ a_m, atol=1e-12)
    np.testing.assert_allclose(vertex_product(a, a_m, first, previous), a @ dense(first) @ a_m, atol=1e-12)
    np.testing.assert_allclose(vertex_product(a, a_m, second, None), a @ dense(second) @ a_m, atol=1e-12)


def test_sparse_barycentric_update_matches_dense_formula():
    rng = np.random.default_rng(1)
    codes = [rng.standard_normal((8, 3)), rng.standard_normal((5, 3))]
    plans = [rng.dirichlet(np.ones(8), 6) / 6,  # rows sum to 1 / N_B
             np.outer(np.full(6, 1 / 6), np.full(5, 1 / 5))]
    lambdas = np.array([0.3, 0.7])
    expected = 6 * (0.3 * plans[0] @ codes[0] + 0.7 * plans[1] @ codes[1])
    np.testing.assert_allclose(barycentric_update(plans, codes, lambdas, np.full(6, 1 / 6)), expected, atol=1e-12)


def test_initialising_modality_gets_the_identity_plan_and_the_rest_are_solved():
    rng = np.random.default_rng(2)
    codes = [rng.standard_normal((25, 4)) for _ in range(3)]
    result = fgw_barycenter(codes, alpha=0.5, max_outer=0, init_modality=1)
    np.testing.assert_array_equal(result.transport_plans[1], np.eye(25) / 25)
    expected = sum(solve_fgw_plan(squared_distances(codes[1], z), pairwise_distances(codes[1]),
                                  pairwise_distances(z), 0.5)[1] for z in (codes[0], codes[2])) / 3
    assert result.objective == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_warm_start_from_a_solution_keeps_it(seed):
    rng = np.random.default_rng(seed)
    z, z_m = rng.standard_normal((40, 4)), rng.standard_normal((40, 4))
    feature, a, a_m = squared_distances(z, z_m), pairwise_distances(z), pairwise_distances(z_m)
    plan, value = solve_fgw_plan(feature, a, a_m, 0.5)
    again, value_again = solve_fgw_plan(feature, a, a_m, 0.5, initial_plan=plan)
    assert value_again <= value + 1e-12
    np.testing.assert_array_equal(again, plan)
