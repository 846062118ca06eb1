"""The OT-based latent mixer (OTM): a stochastic fused Gromov-Wasserstein barycenter.

Notation follows Gong, Yue and Xu, "An Optimal Transport-based Latent Mixer for Robust
Multi-modal Learning" (AAAI 2025):

* ``codes[m]`` is Z_m (N_m x d), the latent codes of modality m, with uniform weights mu_m.
* ``barycenter`` is Z_B (N_B x d) with uniform weights mu_B; its structure A = pairwise
  Euclidean distances of Z_B; A_m = pairwise distances of Z_m; D_m = squared distances
  between the rows of Z_B and Z_m.
* ``transport_plans[m]`` is T_m in Pi(mu_B, mu_m) (N_B x N_m; rows sum to 1/N_B, columns to
  1/N_m).
* ``alpha`` weights the Wasserstein (feature) term as in the paper, eq. 2. POT's
  ``alpha`` weights the structure term: ``alpha_pot = 1 - alpha``.

Where things run: every solve happens on the CPU in float64 numpy (exact OT is a CPU network
flow). Codes may be numpy arrays or torch tensors on any device; they are copied to host
float64, and the mixed barycenter comes back as numpy in the codes' floating dtype (float32
stays float32). Plans are float64 so that their marginals hold to 1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

import numpy as np
from scipy.sparse import csr_array

from otm_fed.transport import pairwise_distances, solve_fgw_plan, squared_distances, uniform

MaskMode = Literal["binary", "dirichlet", "none"]
MASK_MODES: tuple[str, ...] = ("binary", "dirichlet", "none")
InitMode = Literal["modality", "random"]
INIT_MODES: tuple[str, ...] = ("modality", "random")
DIRICHLET_CONCENTRATION = 0.5


# --------------------------------------------------------------------------- validation


def as_float64(array: object, name: str = "array") -> np.ndarray:
    """Host float64 copy of a numpy array or torch tensor (any device)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()  # torch tensor
    result = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(result)):
        raise ValueError(f"{name} contains NaN or Inf")
    return result


def codes_dtype(codes: Sequence[object]) -> np.dtype:
    """float64 if any Z_m is float64 (numpy or torch), else float32: the dtype results come back in."""
    names = [str(getattr(z, "dtype", np.asarray(z).dtype)).removeprefix("torch.") for z in codes]
    return np.dtype(np.float64) if "float64" in names else np.dtype(np.float32)


def validate_codes(codes: Sequence[object]) -> list[np.ndarray]:
    """Check the list of Z_m: non-empty, 2-D, finite, at least one row, one shared width d."""
    if len(codes) == 0:
        raise ValueError("codes must hold at least one modality's latent codes")
    checked = []
    for m, z in enumerate(codes):
        z64 = as_float64(z, name=f"codes[{m}]")
        if z64.ndim != 2:
            raise ValueError(f"codes[{m}] must be a 2-D array (N_m x d), got shape {z64.shape}")
        if z64.shape[0] == 0 or z64.shape[1] == 0:
            raise ValueError(f"codes[{m}] is empty (shape {z64.shape})")
        checked.append(z64)
    widths = {z.shape[1] for z in checked}
    if len(widths) != 1:
        raise ValueError(
            f"all modalities must share the latent width d, got widths "
            f"{[z.shape[1] for z in checked]}"
        )
    return checked


def validate_alpha(alpha: float) -> float:
    if not np.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return float(alpha)


def validate_weights(weights: Sequence[float] | None, n_modalities: int) -> np.ndarray:
    """lambda_m: uniform by default; otherwise non-negative, one per modality, summing to 1."""
    if weights is None:
        return np.full(n_modalities, 1.0 / n_modalities)
    lambdas = np.asarray(weights, dtype=np.float64)
    if lambdas.shape != (n_modalities,):
        raise ValueError(f"need one weight per modality ({n_modalities}), got {lambdas.shape}")
    if not np.all(np.isfinite(lambdas)) or np.any(lambdas < 0):
        raise ValueError(f"modality weights must be finite and non-negative, got {lambdas}")
    if abs(lambdas.sum() - 1.0) > 1e-6:
        raise ValueError(f"modality weights must sum to 1, got sum {lambdas.sum():.6g}")
    return lambdas


def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def fgw_distance(z: np.ndarray, z_m: np.ndarray, alpha: float,
                 initial_plan: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """FGW(Z, Z_m; alpha) of eq. 2 with uniform weights: returns (T_m, value)."""
    z, z_m = validate_codes([z, z_m])
    alpha = validate_alpha(alpha)
    return solve_fgw_plan(squared_distances(z, z_m), pairwise_distances(z),
                          pairwise_distances(z_m), alpha, initial_plan=initial_plan)


def barycenter_objective(barycenter: object, codes: Sequence[object], alpha: float) -> float:
    """sum_m FGW(Z_B, Z_m; alpha), plans re-solved from mu_B mu_m^T with A = distances of Z_B.

    One shared yardstick for barycenters from any method (unweighted sum over modalities).
    """
    z_b, *z_ms = validate_codes([barycenter, *codes])
    return float(sum(fgw_distance(z_b, z_m, alpha)[1] for z_m in z_ms))


# --------------------------------------------------------------------------- barycenter (eq. 1, Alg. 2)


@dataclass
class FGWBarycenter:
    """Z_B and the plans {T_m} of eq. 1, with the objective trace of Algorithm 2."""

    barycenter: np.ndarray
    transport_plans: list[np.ndarray]
    objective: float
    initial_objective: float
    objective_history: list[float] = field(default_factory=list)
    best_iteration: int = 0


def initial_barycenter(codes: Sequence[np.ndarray], barycenter_size: int, init: InitMode,
                       init_modality: int, rng: np.random.Generator) -> np.ndarray:
    """Z_B at iteration 0: rows of one modality's codes, or Gaussian noise at the codes' scale."""
    if init == "modality":
        source = codes[init_modality]
        if source.shape[0] == barycenter_size:
            return source.copy()
        replace = source.shape[0] < barycenter_size
        return source[rng.choice(source.shape[0], barycenter_size, replace=replace)].copy()
    stacked = np.concatenate(codes)
    return stacked.mean(0) + stacked.std(0) * rng.standard_normal((barycenter_size, stacked.shape[1]))


def barycentric_update(plans: Sequence[np.ndarray], codes: Sequence[np.ndarray],
                       lambdas: np.ndarray, mu_b: np.ndarray) -> np.ndarray:
    """Z = sum_m lambda_m diag(1/mu_B) T_m Z_m, the feature step of Algorithm 2.

    Each T_m Z_m is taken over the plan's support: conditional-gradient plans are sparse (N_B
    non-zeros when they are permutations), so this is O(nnz d) rather than O(N_B N_m d).
    """
    projected = (lam * (csr_array(plan) @ z_m) for lam, plan, z_m in zip(lambdas, plans, codes))
    return sum(projected) / mu_b[:, None]


def fgw_barycenter(codes: Sequence[object], alpha: float = 0.5, barycenter_size: int | None = None,
                   weights: Sequence[float] | None = None, max_outer: int = 5, tol: float = 1e-6,
                   init: InitMode = "modality", init_modality: int = 0,
                   max_inner: int = 50, seed: int | np.random.Generator | None = 0) -> FGWBarycenter:
    """FGW barycenter of eq. 1 by Algorithm 2, returning the best iterate.

    Alternates (a) T_m = argmin FGW(Z, Z_m) for every m, warm-started from the previous outer
    iteration's plan, and (b) Z <- sum_m lambda_m diag(1/mu_B) T_m Z_m (rows of T_m sum to
    1/N_B, hence the factor N_B; ``barycentric_update``), with A recomputed from the new Z. In
    (a), a modality equal to Z (the initialising one, at first) gets T_m = I / N_B unsolved:
    FGW >= 0 and that plan attains 0, so it is a global minimiser. The objective
    sum_m lambda_m FGW(Z, Z_m) is evaluated after every (a); iteration stops after ``max_outer``
    updates, when its relative change is below ``tol``, or when (b) leaves Z unchanged.

    The feature update ignores that A depends on Z, and the average of codes that live in
    different coordinate systems shrinks towards the origin, so plain alternation can end above
    its start. The best iterate is kept: the result is never worse than the initialisation.

    Default initialisation: the codes of ``init_modality`` (N_B = its N_m by default). Its
    structure is a real code geometry, so the first plans are meaningful; a random Z has
    no structure and measured worse objectives (``init="random"`` is the paper's choice).
    """
    z_ms = validate_codes(codes)
    alpha = validate_alpha(alpha)
    lambdas = validate_weights(weights, len(z_ms))
    if init not in INIT_MODES:
        raise ValueError(f"init must be one of {INIT_MODES}, got {init!r}")
    if not 0 <= init_modality < len(z_ms):
        raise ValueError(f"init_modality {init_modality} out of range for {len(z_ms)} modalities")
    barycenter_size = z_ms[init_modality].shape[0] if barycenter_size is None else barycenter_size
    if barycenter_size < 1:
        raise ValueError(f"barycenter_size must be positive, got {barycenter_size}")
    if max_outer < 0:
        raise ValueError(f"max_outer must be non-negative, got {max_outer}")
    rng = as_generator(seed)
    mu_b = uniform(barycenter_size)
    structures = [pairwise_distances(z_m) for z_m in z_ms]
    z_b = initial_barycenter(z_ms, barycenter_size, init, init_modality, rng)
    plans: list[np.ndarray | None] = [None] * len(z_ms)
    history: list[float] = []
    best: FGWBarycenter | None = None
    for iteration in range(max_outer + 1):
        structure_b = pairwise_distances(z_b)
        objective = 0.0
        for m, z_m in enumerate(z_ms):
            if np.array_equal(z_b, z_m):  # T = I / N attains FGW = 0, the minimum (both terms >= 0)
                plans[m], value = np.eye(len(z_m)) / len(z_m), 0.0
            else:
                plans[m], value = solve_fgw_plan(squared_distances(z_b, z_m), structure_b,
                                                 structures[m], alpha, mu_b=mu_b,
                                                 initial_plan=plans[m], max_iter=max_inner)
            objective += lambdas[m] * value
        history.append(objective)
        if best is None or objective < best.objective:
            best = FGWBarycenter(z_b, list(plans), objective, history[0], history, iteration)
        if iteration == max_outer or (
            iteration > 0 and abs(history[-2] - objective) <= tol * max(abs(history[-2]), 1e-12)
        ):
            break
        updated = barycentric_update(plans, z_ms, lambdas, mu_b)
        if np.allclose(updated, z_b, rtol=1e-12, atol=1e-12):
            break  # a fixed point: the plans, and so the objective, would not change
        z_b = updated
    best.initial_objective = history[0]
    return best


# --------------------------------------------------------------------------- stochastic mixing (eq. 3-4)


def sample_masks(n_modalities: int, shape: tuple[int, int], weights: Sequence[float] | None = None,
                 mode: MaskMode = "binary",
                 seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Masks M_m of eq. 3, stacked as (M, N_B, d), summing to the all-ones matrix.

    ``binary``: every entry comes from one modality, drawn with probabilities lambda_m (paper).
    ``dirichlet``: soft masks, each entry's weights drawn from Dir(0.5, ..., 0.5).
    ``none``: M_m = lambda_m everywhere, the classic weighted barycenter ("WB" ablation).
    """
    lambdas = validate_weights(weights, n_modalities)
    rng = as_generator(seed)
    if mode == "binary":
        owner = rng.choice(n_modalities, size=shape, p=lambdas)
        return (owner[None, :, :] == np.arange(n_modalities)[:, None, None]).astype(np.float64)
    if mode == "dirichlet":
        draws = rng.dirichlet(np.full(n_modalities, DIRICHLET_CONCENTRATION), size=shape)
        return np.moveaxis(draws, -1, 0)
    if mode == "none":
        return np.broadcast_to(lambdas[:, None, None], (n_modalities, *shape)).copy()
    raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")


def mix(codes: Sequence, transport_plans: Sequence, masks) -> np.ndarray:
    """Z~_B = N_B sum_m M_m (.) (T_m Z_m), eq. 3 (diag(1/mu_B) in place of N_B in general).

    Written with operators only, so it takes numpy arrays or torch tensors alike (the
    clustering regulariser differentiates through it).
    """
    mu_b = transport_plans[0].sum(1)[:, None]
    return sum(masks[m] * (transport_plans[m] @ codes[m]) for m in range(len(codes))) / mu_b


@dataclass
class MixResult:
    """What the server sends back: Z~_B, the plans T_m, and how they were made."""

    mixed_barycenter: np.ndarray
    transport_plans: list[np.ndarray]
    masks: np.ndarray
    barycenter: FGWBarycenter


class Mixer(Protocol):
    """Any callable with this signature can replace the OTM mixer in the strategy."""

    def __call__(self, codes: Sequence[np.ndarray], seed: int | np.random.Generator) -> MixResult: ...


@dataclass(frozen=True)
class OTMixer:
    """The stochastic FGW barycenter of the paper (eq. 1-3) as a configured callable."""

    alpha: float = 0.5
    barycenter_size: int | None = None
    weights: tuple[float, ...] | None = None
    mask_mode: MaskMode = "binary"
    max_outer: int = 5
    tol: float = 1e-6
    init: InitMode = "modality"
    init_modality: int = 0

    def __post_init__(self) -> None:
        validate_alpha(self.alpha)
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if self.init not in INIT_MODES:
            raise ValueError(f"init must be one of {INIT_MODES}, got {self.init!r}")

    def __call__(self, codes: Sequence[object], seed: int | np.random.Generator = 0) -> MixResult:
        rng = as_generator(seed)
        z_ms = validate_codes(codes)
        out_dtype = codes_dtype(codes)
        result = fgw_barycenter(z_ms, self.alpha, self.barycenter_size, self.weights,
                                self.max_outer, self.tol, self.init, self.init_modality, seed=rng)
        masks = sample_masks(len(z_ms), result.barycenter.shape, self.weights, self.mask_mode, rng)
        mixed = mix(z_ms, result.transport_plans, masks)
        return MixResult(mixed.astype(out_dtype), result.transport_plans, masks, result)
