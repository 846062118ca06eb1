"""Frame alignment (beyond the paper): every modality's codes in one coordinate frame before mixing.

Agents train their encoders apart, so their codes live in unrelated coordinate frames, and the
FGW feature term ||z_B - z_m||^2 of eq. 2 compares coordinates that mean different things: whole
clusters are then matched coherently to the wrong clusters. The server therefore estimates, per
modality and without labels or correspondences, a similarity map into a common frame

    phi_m(z) = ((z - c_m) / s_m) Q_m,

with c_m the batch mean, s_m the batch's RMS norm about it, and Q_m orthogonal (d x d). The
reference modality's frame is the common one (its Q is I in round 1). Q_m minimises the
Wasserstein-Procrustes objective

    W(Q) = min_{T in Pi(mu_m, mu_r)} <T, D(X_m Q, X_r)>     (X: centred, scaled batches),

by alternating the exact OT plan T and the orthogonal Procrustes solution Q = U V^T of
X_m^T T X_r = U S V^T (each step lowers W). W is not convex in Q, so it starts from last round's
Q_m (the strategy's state) and from maps read off Gromov-Wasserstein plans, which compare only
within-modality distances and so need no common frame; the lowest W wins. The GW starts are
searched on at most 128 rows of each batch and only their winner is refined on the full batch.

The mix is made in the common frame; agent m gets it back in its own frame,
phi_m^{-1}(Z~_B) = s_m Z~_B Q_m^T + c_m. Because N_m T_m^T 1 = 1, eq. 4 commutes with the
affine phi_m^{-1}: the agent's target is the projection of the mix, expressed in its own frame.

``alignment_confidence`` is the label-free gate's statistic: how much better the fit is than the
fit of a structure-free copy of the same codes. ``ConfidenceGate`` decides on it only while a
modality has never been mixed: mixing pulls a modality's codes towards the barycenter, so its
confidence afterwards measures an alignment the mix itself made (docs/findings/alignment-and-gate.md).

Anchors (optional): K declared samples, each held in several modalities, whose codes arrive at
their positions in one shared order. Their rows correspond, so orthogonal Procrustes on those a
modality shares with the reference gives Q_m in closed form; the batch refines it. They also
show correspondence itself, which the batches cannot: with anchors the gate reads
``anchor_confidence``, how much better the anchors fit one another in their true pairing than in
random pairings (a permutation test of Procrustes fit, Jackson's PROTEST).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from otm_fed.transport import exact_ot_vertex, pairwise_distances, solve_fgw_plan, squared_distances, uniform

PROCRUSTES_STEPS = 30
PROCRUSTES_TOL = 1e-7
GW_STEPS = 100
SEARCH_ROWS = 128  # rows per batch on which fresh GW starts are searched (``searched_rotation``)
ANCHOR_PERMUTATIONS = 100  # random pairings of the anchors in ``anchor_fit_gain``'s null
ANCHOR_NULL_ROWS = 1000  # paired rows of ``anchor_confidence``'s null: pairings x anchors (``null_pairings``)


@dataclass(frozen=True)
class Frame:
    """phi_m: centre c_m (d,), scale s_m > 0 and orthogonal rotation Q_m (d x d)."""

    centre: np.ndarray
    scale: float
    rotation: np.ndarray

    def to_common(self, codes: np.ndarray) -> np.ndarray:
        """phi_m(Z) = ((Z - c_m) / s_m) Q_m."""
        return ((codes - self.centre) / self.scale) @ self.rotation

    def from_common(self, codes: np.ndarray) -> np.ndarray:
        """phi_m^{-1}(Y) = s_m Y Q_m^T + c_m."""
        return self.scale * codes @ self.rotation.T + self.centre


def standardise(codes: np.ndarray) -> tuple[np.ndarray, float]:
    """(c, s): the batch mean and the RMS norm of the centred rows (1 for a constant batch)."""
    centre = codes.mean(0)
    scale = float(np.sqrt(((codes - centre) ** 2).sum(1).mean()))
    return centre, scale if scale > 1e-12 else 1.0


def procrustes_rotation(x: np.ndarray, y: np.ndarray, plan: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The orthogonal Q minimising sum_ij T_ij ||x_i Q - y_j||^2: U V^T for x^T T y = U S V^T.
    ``plan`` is T's support (rows, cols, values)."""
    rows, cols, values = plan
    u, _, vt = np.linalg.svd(x[rows].T @ (values[:, None] * y[cols]))
    return u @ vt


def wasserstein_procrustes(x: np.ndarray, y: np.ndarray, rotation: np.ndarray,
                           max_steps: int = PROCRUSTES_STEPS) -> tuple[np.ndarray, float]:
    """Alternate T = argmin <T, D(x Q, y)> (exact OT) and Q = procrustes(x, y, T) from ``rotation``:
    returns (Q, W(Q)), W the OT cost at the returned Q (it never increases along the way)."""
    mu_x, mu_y = uniform(len(x)), uniform(len(y))
    best_value = np.inf
    for _ in range(max_steps):
        cost = squared_distances(x @ rotation, y)
        plan, _ = exact_ot_vertex(cost, mu_x, mu_y)
        value = float(cost[plan[0], plan[1]] @ plan[2])
        if value >= best_value * (1.0 - PROCRUSTES_TOL):
            break
        best_rotation, best_value = rotation, value
        rotation = procrustes_rotation(x, y, plan)
    return best_rotation, best_value


def gw_start_plans(x: np.ndarray, y: np.ndarray, n_starts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n_starts`` Gromov-Wasserstein plans between the rows' distance matrices (frame-free):
    the first from the product coupling, the others from random vertices of Pi(mu_x, mu_y)."""
    structure_x, structure_y = pairwise_distances(x), pairwise_distances(y)
    mu_x, mu_y = uniform(len(x)), uniform(len(y))
    zero = np.zeros((len(x), len(y)))
    plans = []
    for start in range(n_starts):
        initial = None
        if start:
            rows, cols, values = exact_ot_vertex(rng.random((len(x), len(y))), mu_x, mu_y)[0]
            initial = np.zeros_like(zero)
            initial[rows, cols] = values
        plans.append(solve_fgw_plan(zero, structure_x, structure_y, 0.0, mu_x, mu_y, initial, GW_STEPS)[0])
    return plans


def searched_rotation(x: np.ndarray, y: np.ndarray, gw_starts: int, rng: np.random.Generator) -> np.ndarray:
    """The best of ``gw_starts`` fresh starts, searched on at most SEARCH_ROWS random rows of each
    batch: per GW plan its Procrustes map, refined by Wasserstein-Procrustes on those rows; the Q
    with the lowest W(Q) there. GW costs O(N^3) a step, so the search on 128 rows instead of 256
    is about 3x cheaper (docs/findings/alignment-and-gate.md); the full batch refines the winner (``fit_rotation``).
    Keeping the best 3 for the full batch instead gave the same confidences and plans."""
    x_rows, y_rows = (z if len(z) <= SEARCH_ROWS else z[np.sort(rng.choice(len(z), SEARCH_ROWS, replace=False))]
                      for z in (x, y))
    fits = []
    for plan in gw_start_plans(x_rows, y_rows, gw_starts, rng):
        rows, cols = np.nonzero(plan)
        start = procrustes_rotation(x_rows, y_rows, (rows, cols, plan[rows, cols]))
        fits.append(wasserstein_procrustes(x_rows, y_rows, start))
    return min(fits, key=lambda fit: fit[1])[0]


def fit_rotation(x: np.ndarray, y: np.ndarray, previous: np.ndarray | None, gw_starts: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The Q with the lowest W(Q) from Wasserstein-Procrustes on the full batches, started at
    ``previous`` (else at I: frames that already agree, as with ``shared-init``, stay as they are
    unless a fit beats them) and, with ``gw_starts``, at the winner of the search over that many
    GW starts (``searched_rotation``), and then at the mirror -Q of the better: (Q, W(Q)). Codes of
    a WAE are near-symmetric about their mean, so the fit's most common wrong optimum is the
    mirror of the right one; the mirror start costs one more Wasserstein-Procrustes a round."""
    starts = [np.eye(x.shape[1]) if previous is None else previous]
    if gw_starts:
        starts.append(searched_rotation(x, y, gw_starts, rng))
    best = min((wasserstein_procrustes(x, y, start) for start in starts), key=lambda fit: fit[1])
    return min(best, wasserstein_procrustes(x, y, -best[0]), key=lambda fit: fit[1])


def structure_free_copy(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x with its principal coordinates permuted independently across rows: the same spectrum
    (variance per principal axis) and marginals, no joint structure (clusters) left."""
    _, _, axes = np.linalg.svd(x - x.mean(0), full_matrices=False)
    scores = x @ axes.T
    shuffled = np.stack([rng.permutation(column) for column in scores.T], axis=1)
    return shuffled @ axes


def alignment_confidence(x: np.ndarray, y: np.ndarray, rotation: np.ndarray, value: float,
                         rng: np.random.Generator) -> float:
    """1 - W(Q) / W_null, W_null the Wasserstein-Procrustes fit (from the same Q) of a structure-free
    copy of x: near 1 when x is a rotated copy of y, near 0 (or below) when x's joint structure
    fits y no better than noise with x's spectrum would."""
    _, null_value = wasserstein_procrustes(structure_free_copy(x, rng), y, rotation)
    return 1.0 - value / null_value if null_value > 0 else 0.0


def anchor_rotation(x_anchors: np.ndarray, y_anchors: np.ndarray) -> np.ndarray:
    """Orthogonal Procrustes on the anchors, whose rows correspond: argmin_Q ||x_a Q - y_a||_F."""
    k = len(x_anchors)
    return procrustes_rotation(x_anchors, y_anchors, (np.arange(k), np.arange(k), np.full(k, 1.0 / k)))


def misfit_of_moments(cross: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """m^2 = 1 - ||C||_*^2 / N from the centred cross-product C = x^T y (... x d x d) and
    N = ||x||^2 ||y||^2 of centred sets (...): 1 where N vanishes."""
    nuclear = np.linalg.svd(cross, compute_uv=False).sum(-1)
    return np.where(norms > 1e-24, np.maximum(0.0, 1.0 - nuclear ** 2 / np.maximum(norms, 1e-24)), 1.0)


def procrustes_misfit(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """m^2 = min_{s, Q orthogonal} ||s x Q - y||^2 / ||y||^2 = 1 - ||x^T y||_*^2 / (||x||^2 ||y||^2)
    for centred x, y (rows in correspondence; ||.||_* the nuclear norm): 0 for a similar copy, 1
    when no rotation and scale relate them. Symmetric in x and y, free of their scales. ``x`` may
    be a stack (P x K x d) of K-row sets, each compared with ``y``: then an array of P misfits."""
    x, y = x - x.mean(-2, keepdims=True), y - y.mean(0)
    misfit = misfit_of_moments(np.swapaxes(x, -1, -2) @ y, (x ** 2).sum((-2, -1)) * float((y ** 2).sum()))
    return misfit if misfit.ndim else float(misfit)


def anchor_fit_gain(x_anchors: np.ndarray, y_anchors: np.ndarray, rng: np.random.Generator,
                    permutations: int = ANCHOR_PERMUTATIONS) -> float:
    """1 - m^2(x_a, y_a) / mean_pi m^2(x_a[pi], y_a): how much of the misfit of randomly paired
    anchors their true pairing removes (``procrustes_misfit``; ``permutations`` random pi)."""
    orders = np.stack([rng.permutation(len(x_anchors)) for _ in range(permutations)])
    null = float(procrustes_misfit(x_anchors[orders], y_anchors).mean())
    return 1.0 - procrustes_misfit(x_anchors, y_anchors) / null if null > 0 else 0.0


def leave_one_out_misfits(x: np.ndarray, y: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every anchor i, with anchor i left out of both sets: m^2 of the true pairing (K) and of
    each random pairing (P x K). Pairing ``orders[p]`` pairs y_j with x_{pi_j}; without anchor i it
    pairs y_{pi^-1(i)} with x_{pi_i} instead (a uniform random pairing of the other K - 1). Each set
    is the full set's moments less a rank-one or rank-three update, so the cost is linear in K
    (K (P + 1) SVDs of d x d), where refitting every left-out set would be quadratic."""
    k = len(x)
    rest_x, rest_y = x.sum(0) - x, y.sum(0) - y  # K x d: the sums without anchor i
    norms = (((x ** 2).sum() - (x ** 2).sum(1) - (rest_x ** 2).sum(1) / (k - 1))
             * ((y ** 2).sum() - (y ** 2).sum(1) - (rest_y ** 2).sum(1) / (k - 1)))
    centring = rest_x[:, :, None] * rest_y[:, None, :] / (k - 1)
    true = misfit_of_moments(x.T @ y - x[:, :, None] * y[:, None, :] - centring, norms)
    inverse = np.argsort(orders, axis=1)
    null = np.empty(orders.shape)
    for p, (order, back) in enumerate(zip(orders, inverse)):
        partner_x, partner_y = x[order], y[back]  # x paired with y_i, y paired with x_i
        cross = (partner_x.T @ y - partner_x[:, :, None] * y[:, None, :] - x[:, :, None] * partner_y[:, None, :]
                 + partner_x[:, :, None] * partner_y[:, None, :])
        null[p] = misfit_of_moments(cross - centring, norms)
    return true, null


def null_pairings(n_anchors: int) -> int:
    """Random pairings for the null of K anchors: ``ANCHOR_PERMUTATIONS`` (100) up to 10 anchors,
    then ``ANCHOR_NULL_ROWS`` / K (at least 10). The spread of a random pairing's m^2 falls about
    as 1 / sqrt(K), so K x pairings held near 1,000 keeps the null's precision where the gate's
    threshold was chosen (10 anchors, 100 pairings) while the cost stops growing with K."""
    return int(min(ANCHOR_PERMUTATIONS, max(10, np.ceil(ANCHOR_NULL_ROWS / max(n_anchors, 1)))))


def anchor_confidence(x_anchors: np.ndarray, y_anchors: np.ndarray, rng: np.random.Generator,
                      permutations: int | None = None) -> float:
    """The smallest ``anchor_fit_gain`` with one anchor left out (the jackknife minimum, the
    left-out sets' nulls sharing ``permutations`` random pairings, by default ``null_pairings``:
    ``leave_one_out_misfits``; the plain gain below 3 anchors). Near 1 when the two modalities'
    anchor codes are a similar copy of each other, near 0 when the true correspondence fits no
    better than a random one: it tests correspondence, which ``alignment_confidence`` (structure
    against a structure-free copy) cannot. Leaving one out keeps a single anchor that is extreme in
    both modalities (a movie with many keywords and many actors) from reading as correspondence of
    the whole: on the final codes of Movies' seed-2 run, with its 10 anchors, the plain gain reads
    0.23 and the jackknife 0.08 (docs/findings/anchors.md)."""
    k = len(x_anchors)
    permutations = permutations or null_pairings(k)
    if k < 3:
        return anchor_fit_gain(x_anchors, y_anchors, rng, permutations)
    orders = np.stack([rng.permutation(k) for _ in range(permutations)])
    true, null = leave_one_out_misfits(x_anchors, y_anchors, orders)
    null = null.mean(0)
    gains = np.where(null > 0, 1.0 - true / np.where(null > 0, null, 1.0), 0.0)
    return float(gains.min())


def pooled_anchor_codes(parts: list[tuple[np.ndarray, np.ndarray]], n_anchors: int, width: int) -> np.ndarray:
    """A modality's anchor codes, K x d in anchor order, from (positions, codes) parts (its sites,
    lowest site first): each anchor's codes from the first part that holds it; NaN rows for the
    anchors no part holds."""
    pooled = np.full((n_anchors, width), np.nan)
    for positions, codes in reversed(parts):
        pooled[positions] = codes
    return pooled


@dataclass
class FrameAlignment:
    """Per modality: its map phi_m, its fit W(Q_m) to the reference and its confidence; per
    modality but the reference, the statistics the gate may read, by name (``"confidence"``)."""

    frames: dict[int, Frame]
    objectives: dict[int, float]
    confidences: dict[int, float]
    reference: int
    readings: dict[int, dict[str, float]] = field(default_factory=dict)


def align_frames(codes: Mapping[int, np.ndarray], rotations: Mapping[int, np.ndarray], gw_starts: int,
                 rng: np.random.Generator, search: bool = False,
                 anchors: Mapping[int, np.ndarray] | None = None) -> FrameAlignment:
    """phi_m for every modality in ``codes`` (modality id -> Z_m), into the frame of the lowest id
    present (the reference; its own Q is its stored rotation, else I), warm-started from
    ``rotations`` (last round's Q_m). A modality without a stored rotation, or every modality when
    ``search``, also gets ``gw_starts`` GW starts. With ``anchors`` (modality id -> the anchors'
    codes, K x d in anchor order, NaN rows for anchors it does not hold) Q_m starts from the
    Procrustes fit on the anchors m shares with the reference alone, the batch only refining it,
    and the confidence is their ``anchor_confidence`` (else ``alignment_confidence``); a modality
    that shares no anchor with the reference is fitted as without anchors and reads 0. The
    reference's confidence is the largest of the others' (it has someone to learn from if anyone
    aligns with it)."""
    reference = min(codes)
    d = codes[reference].shape[1]
    standardised = {m: standardise(z) for m, z in codes.items()}

    def scaled(m: int, z: np.ndarray) -> np.ndarray:
        return (z - standardised[m][0]) / standardised[m][1]

    frames = {reference: Frame(*standardised[reference], rotations.get(reference, np.eye(d)))}
    target = scaled(reference, codes[reference]) @ frames[reference].rotation
    objectives, confidences = {reference: 0.0}, {}
    for m in sorted(codes):
        if m == reference:
            continue
        x = scaled(m, codes[m])
        shared = (np.isfinite(anchors[m]).all(1) & np.isfinite(anchors[reference]).all(1) if anchors is not None
                  else np.zeros(0, bool))
        if shared.any():
            own, theirs = anchors[m][shared], anchors[reference][shared]
            start = anchor_rotation(scaled(m, own), scaled(reference, theirs) @ frames[reference].rotation)
            rotation, value = wasserstein_procrustes(x, target, start)
        else:
            previous = rotations.get(m)
            rotation, value = fit_rotation(x, target, previous, gw_starts if previous is None or search else 0, rng)
        frames[m] = Frame(*standardised[m], rotation)
        objectives[m] = value
        if anchors is None:
            confidences[m] = alignment_confidence(x, target, rotation, value, rng)
        else:
            confidences[m] = anchor_confidence(own, theirs, rng) if shared.any() else 0.0
    readings = {m: {"confidence": c} for m, c in confidences.items()}
    confidences[reference] = max(confidences.values()) if confidences else 0.0
    return FrameAlignment(frames, objectives, dict(sorted(confidences.items())), reference, dict(sorted(readings.items())))


@dataclass
class ConfidenceGate:
    """Which modalities mix: decided on never-mixed codes, then kept.

    A modality m (not the reference) opens once, for every statistic named in ``thresholds``, the
    mean of its readings over its last ``window`` rounds reaches that statistic's threshold; the
    rounds counted are all rounds before it ever mixed, so the statistics cannot reward an
    alignment the mix made. Once open it stays open. The reference mixes when at least one other
    modality is open (it is the frame they align to); fewer than two leave no one to mix with."""

    thresholds: Mapping[str, float]  # statistic name (a key of ``FrameAlignment.readings``) -> threshold
    window: int
    history: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # never-opened m -> its last readings
    opened: set[int] = field(default_factory=set)

    def admit(self, readings: Mapping[int, Mapping[str, float]], reference: int) -> list[int]:
        """Record this round's readings (modality -> statistic name -> value; every modality here
        but the reference) of the modalities not yet open; the modalities that mix this round, in
        order."""
        modalities = sorted({reference, *readings})
        for m in modalities:
            if m == reference or m in self.opened:
                continue
            own = self.history.setdefault(m, {name: [] for name in self.thresholds})
            for name in self.thresholds:
                own[name] = (own[name] + [float(readings[m][name])])[-self.window:]
            if all(len(own[name]) == self.window and float(np.mean(own[name])) >= threshold
                   for name, threshold in self.thresholds.items()):
                self.opened.add(m)
                del self.history[m]
        others = [m for m in modalities if m != reference and m in self.opened]
        return [reference, *others] if others else []

    def state(self) -> dict[str, Any]:
        """JSON-ready: the open modalities and the readings the others have counted so far."""
        return {"opened": sorted(self.opened),
                "history": {str(m): dict(values) for m, values in sorted(self.history.items())}}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take ``state`` (from ``state``) back; refused when it counted other statistics."""
        history = state.get("history", {})
        for m, values in history.items():
            counted = sorted(values) if isinstance(values, Mapping) else "one unnamed confidence"
            if counted != sorted(self.thresholds):
                raise ValueError(f"cannot resume: the checkpoint's gate counted {counted} for modality {m}, "
                                 f"this gate reads {sorted(self.thresholds)}")
        self.opened = {int(m) for m in state.get("opened", [])}
        self.history = {int(m): {name: [float(v) for v in values[name]] for name in self.thresholds}
                        for m, values in history.items()}
