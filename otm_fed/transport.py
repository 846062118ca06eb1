"""Transport primitives shared by the mixer and the frames: distances, exact OT, the FGW plan.

Notation of Gong, Yue and Xu (AAAI 2025), eq. 2: D_m = squared distances between the rows of Z_B
and Z_m (the feature cost), A and A_m = pairwise Euclidean distances (the structures), T_m in
Pi(mu_B, mu_m) with rows summing to mu_B and columns to mu_m; ``alpha`` weights the feature term
(POT's ``alpha`` weights the structure term: ``alpha_pot = 1 - alpha``). Everything is float64
numpy on the CPU (exact OT is a network flow); callers convert their codes first.
"""

from __future__ import annotations

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

def uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


# --------------------------------------------------------------------------- geometry


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """D with D(i, j) = ||x_i - y_j||^2 (the feature cost D_m of eq. 2)."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """A with A(i, k) = ||x_i - x_k|| (the structure matrices A, A_m of eq. 2)."""
    a = np.sqrt(squared_distances(x, x))
    np.fill_diagonal(a, 0.0)
    return a


# --------------------------------------------------------------------------- FGW (eq. 2, Alg. 1)


def gw_constant(structure_b: np.ndarray, structure_m: np.ndarray,
                mu_b: np.ndarray, mu_m: np.ndarray) -> np.ndarray:
    """c(i, j) = (A^2 mu_B)_i + (A_m^2 mu_m)_j, so that for any T in Pi(mu_B, mu_m)

    sum_{ijkl} |A(i,k) - A_m(j,l)|^2 T_ij T_kl = <c, T> - 2 <A T A_m, T>.
    """
    return ((structure_b**2) @ mu_b)[:, None] + ((structure_m**2) @ mu_m)[None, :]


def fgw_objective(feature_cost: np.ndarray, structure_b: np.ndarray, structure_m: np.ndarray,
                  plan: np.ndarray, alpha: float) -> float:
    """Eq. 2 at a feasible plan: alpha <D_m, T> + (1 - alpha) sum |A(i,k) - A_m(j,l)|^2 T_ij T_kl.

    The quadratic term uses the plan's own marginals, so it is exact for any non-negative T.
    """
    mu_b, mu_m = plan.sum(1), plan.sum(0)
    constant = gw_constant(structure_b, structure_m, mu_b, mu_m)
    cross = structure_b @ plan @ structure_m
    gw = float((constant * plan).sum() - 2.0 * (cross * plan).sum())
    return alpha * float((feature_cost * plan).sum()) + (1.0 - alpha) * gw


def is_assignment_problem(mu_b: np.ndarray, mu_m: np.ndarray) -> bool:
    """Equal sizes and uniform weights: the vertices of Pi(mu_B, mu_m) are the permutations / N."""
    n = len(mu_b)
    return len(mu_m) == n and np.allclose(mu_b, 1.0 / n) and np.allclose(mu_m, 1.0 / n)


def reduced_cost(cost: np.ndarray, col_potential: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """c(i, j) - v_j, less its row minima, then less its column minima (added to v).

    Returns (reduced cost >= 0, v). Constants taken off a row or a column shift every
    assignment's cost alike, so the optimal assignments are those of ``cost``. (Row potentials
    need not be carried: the row minima absorb them.)
    """
    reduced = cost - col_potential[None, :]
    reduced -= reduced.min(1)[:, None]
    col_min = reduced.min(0)
    reduced -= col_min[None, :]
    return reduced, col_potential + col_min


def assignment_potentials(cost: np.ndarray, cols: np.ndarray, col_start: np.ndarray) -> np.ndarray:
    """Column dual potentials v certifying the optimal assignment i -> cols[i] of ``cost``.

    With r = c - v0 (``col_start``), w solves w_j <= w_{cols[i]} + r(i, j) - r(i, cols[i]):
    shortest paths, which exist because the assignment is optimal, found by Bellman-Ford from
    w = 0 that relaxes only from columns whose w moved in the previous round (at most N
    rounds). With v = v0 + w and u_i = r(i, cols[i]) - w_{cols[i]}, c - u - v is >= 0 with
    zeros on the assignment (LP duality), up to rounding.
    """
    slack = cost - col_start[None, :]
    slack -= slack[np.arange(len(cols)), cols][:, None]  # 0 on the assignment: column minima <= 0
    shift = slack.min(0)  # the first round, from w = 0
    moved = shift < 0
    for _ in range(len(cols) - 1):
        rows = np.flatnonzero(moved[cols])  # rows whose matched column's w moved
        if len(rows) == 0:
            break
        relaxed = np.minimum(shift, (shift[cols[rows]][:, None] + slack[rows]).min(0))
        moved = relaxed < shift
        shift = relaxed
    return col_start + shift


def solve_assignment(cost: np.ndarray,
                     col_potential: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact min-cost assignment of a square cost: (cols, the column potentials it used).

    The cost is reduced (``reduced_cost``) before ``linear_sum_assignment``; this leaves the
    solution unchanged but, from the potentials certifying a similar cost's solution
    (``assignment_potentials`` at the previous conditional-gradient step), leaves the shortest
    augmenting paths little to do: measured 3-5x faster at N = 1000 than on the raw cost.
    """
    start = np.zeros(cost.shape[1]) if col_potential is None else col_potential
    reduced, col_potential = reduced_cost(cost, start)
    _, cols = linear_sum_assignment(reduced)
    return cols, col_potential


SparseVertex = tuple[np.ndarray, np.ndarray, np.ndarray]


def exact_ot_vertex(cost: np.ndarray, mu_b: np.ndarray, mu_m: np.ndarray,
                    potentials: np.ndarray | None = None) -> tuple[SparseVertex, np.ndarray | None]:
    """Exact OT plan for a linear cost: ((rows, cols, values) of its support, potentials).

    This is the linearisation step of Algorithm 1. An optimal vertex has at most
    N_B + N_m - 1 non-zeros. With equal sizes and uniform weights the vertices are scaled
    permutations, so the assignment solver gives the same optimum faster than the network
    simplex, warm-started by column ``potentials``; returns the potentials it used (None on
    the network-simplex path, which takes no warm start).
    """
    n_b, n_m = cost.shape
    if is_assignment_problem(mu_b, mu_m):
        cols, potentials = solve_assignment(cost, potentials)
        return (np.arange(n_b), cols, np.full(n_b, 1.0 / n_b)), potentials
    # The network simplex is exact but reports spurious infeasibility on some costs of mixed
    # sign; a constant shift leaves the optimal plan unchanged (all plans have the same mass).
    plan, log = ot.emd(mu_b, mu_m, np.ascontiguousarray(cost - cost.min()),
                       numItermax=10_000_000, log=True)
    if log["result_code"] != 1:
        raise RuntimeError(f"exact OT solver failed: {log['warning']}")
    rows, cols = np.nonzero(plan)
    return (rows, cols, plan[rows, cols]), None


def exact_ot_plan(cost: np.ndarray, mu_b: np.ndarray, mu_m: np.ndarray) -> SparseVertex:
    """``exact_ot_vertex`` without a warm start: (rows, cols, values) of an optimal plan's support."""
    return exact_ot_vertex(cost, mu_b, mu_m)[0]


def support(plan: np.ndarray) -> SparseVertex:
    """(rows, cols, values) of the non-zeros of a dense plan."""
    rows, cols = np.nonzero(plan)
    return rows, cols, plan[rows, cols]


def structure_product(structure_b: np.ndarray, structure_m: np.ndarray,
                      sparse: SparseVertex) -> np.ndarray:
    """A S A_m for S given as (rows, cols, values): O(nnz N_B N_m) work through the support, or
    two dense products, O(N_B N_m (N_B + N_m)), when S is that dense (a warm start from a plan
    that mixed vertices with tau < 1 can be fully dense, where the support route is quartic)."""
    rows, cols, vals = sparse
    n_b, n_m = structure_b.shape[0], structure_m.shape[0]
    if len(vals) >= n_b + n_m:
        dense = np.zeros((n_b, n_m))
        dense[rows, cols] = vals
        return structure_b @ dense @ structure_m
    return (structure_b[:, rows] * vals) @ structure_m[cols, :]


def sparse_difference(vertex: SparseVertex, vertex0: SparseVertex, n_cols: int) -> SparseVertex:
    """V - V0 as (rows, cols, values) of its non-zeros, without forming either densely."""
    rows = np.concatenate([vertex[0], vertex0[0]])
    cols = np.concatenate([vertex[1], vertex0[1]])
    keys, position = np.unique(rows * n_cols + cols, return_inverse=True)
    values = np.bincount(position, weights=np.concatenate([vertex[2], -vertex0[2]]))
    changed = values != 0
    return keys[changed] // n_cols, keys[changed] % n_cols, values[changed]


def vertex_product(structure_b: np.ndarray, structure_m: np.ndarray, vertex: SparseVertex,
                   previous: tuple[SparseVertex, np.ndarray] | None) -> np.ndarray:
    """A V A_m for the new vertex V, from a previous (V0, A V0 A_m) when that is cheaper.

    A V A_m = A V0 A_m + A (V - V0) A_m, and successive conditional-gradient vertices differ
    in few entries, so the difference is sparser than V (late steps move a handful of rows;
    a repeated vertex costs nothing).
    """
    if previous is not None:
        vertex0, product0 = previous
        change = sparse_difference(vertex, vertex0, structure_m.shape[0])
        if len(change[0]) == 0:
            return product0
        if len(change[0]) < len(vertex[0]):
            return product0 + structure_product(structure_b, structure_m, change)
    return structure_product(structure_b, structure_m, vertex)


def solve_fgw_plan(feature_cost: np.ndarray, structure_b: np.ndarray, structure_m: np.ndarray,
                   alpha: float, mu_b: np.ndarray | None = None, mu_m: np.ndarray | None = None,
                   initial_plan: np.ndarray | None = None, max_iter: int = 50,
                   tol: float = 1e-9) -> tuple[np.ndarray, float]:
    """T_m minimising eq. 2 by conditional gradient (Algorithm 1): returns (T_m, FGW value).

    Structures must be symmetric (distance or kernel matrices). Each step linearises at T with
    the exact gradient alpha D_m + 2 (1 - alpha)(c - 2 A T A_m) (the paper writes the factor
    of A T A_m as 2; the derivative is 4, and c drops out of the LP because <c, T~> is the same
    for every feasible T~), solves that LP exactly, and takes the exact line-search step tau in
    [0, 1] on the quadratic f(T + tau (T~ - T)) = f(T) + b tau + a tau^2. Starts from
    ``initial_plan`` (a warm start) or mu_B mu_m^T. Stops when the relative decrease of f is
    below ``tol``, when the step is zero, or after ``max_iter`` steps.

    Cost: the cubic work is A T A_m for a warm start (an outer product for mu_B mu_m^T), and
    per step A T~ A_m, updated from the previous vertex's (or the start's) product through
    their sparse difference (``vertex_product``); with it, a and b take O(N_B N_m). The decrease of f along the way is
    read off the quadratic (the value returned is recomputed from T). Assignment LPs are
    warm-started with dual potentials of the previous step's LP (``assignment_potentials``).
    """
    n_b, n_m = feature_cost.shape
    mu_b = uniform(n_b) if mu_b is None else mu_b
    mu_m = uniform(n_m) if mu_m is None else mu_m
    if initial_plan is None:  # T = mu_B mu_m^T, so A T A_m = (A mu_B)(A_m mu_m)^T
        plan = np.outer(mu_b, mu_m)
        cross = np.outer(structure_b @ mu_b, structure_m @ mu_m)
        previous = None
    else:
        plan = initial_plan.copy()
        start = support(plan)
        cross = structure_product(structure_b, structure_m, start)  # A T A_m
        previous = (start, cross)
    constant_term = float((gw_constant(structure_b, structure_m, mu_b, mu_m) * plan).sum())

    def value_of(plan: np.ndarray, cross: np.ndarray) -> float:
        return alpha * float((feature_cost * plan).sum()) + (1.0 - alpha) * (
            constant_term - 2.0 * float((cross * plan).sum()))

    value = value_of(plan, cross)
    potentials = None
    for _ in range(max_iter):
        gradient = alpha * feature_cost - 4.0 * (1.0 - alpha) * cross
        vertex, potentials = exact_ot_vertex(gradient, mu_b, mu_m, potentials)
        rows, cols, vals = vertex
        vertex_cross = vertex_product(structure_b, structure_m, vertex, previous)  # A T~ A_m
        # With dT = T~ - T: b = <grad, dT>, a = -2 (1 - alpha) <A dT A_m, dT>, expanded with the
        # symmetry of A, A_m as <A T~ A_m, T~> - 2 <A T A_m, T~> + <A T A_m, T>.
        vertex_quad = float(vertex_cross[rows, cols] @ vals)
        cross_at_vertex = float(cross[rows, cols] @ vals)
        cross_at_plan = float((cross * plan).sum())
        a = -2.0 * (1.0 - alpha) * (vertex_quad - 2.0 * cross_at_vertex + cross_at_plan)
        b = float(gradient[rows, cols] @ vals) - float((gradient * plan).sum())
        if a > 0:
            tau = min(1.0, max(0.0, -b / (2.0 * a)))
        else:
            tau = 1.0 if a + b < 0 else 0.0
        decrease = -(b * tau + a * tau * tau)  # f(T) - f(T + tau dT), exactly
        if tau == 0.0 or decrease <= 0.0:
            break
        if potentials is not None:  # the next LP is an assignment close to this one
            potentials = assignment_potentials(gradient, cols, potentials)
        previous = (vertex, vertex_cross)
        plan *= 1.0 - tau
        plan[rows, cols] += tau * vals
        cross = (1.0 - tau) * cross + tau * vertex_cross
        converged = decrease <= tol * max(abs(value), 1e-12)
        value -= decrease
        if converged:
            break
    return plan, value_of(plan, cross)
