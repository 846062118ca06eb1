"""The unsupervised clustering regulariser of eq. 7 and its gradients for the agents.

GW(K, I_C) = min_{T in Pi(mu_B, mu_C)} sum_{i,j,k,l} |K(i,k) - I_C(j,l)|^2 T_ij T_kl, with K the
Gaussian-kernel similarity of the mixed codes Z~_B. With the optimal plan held fixed
(envelope theorem) the value is a smooth function of Z~_B, and through eq. 3 of every Z_m:
Z~_B = diag(1/mu_B) sum_m M_m (.) (T_m Z_m), plans and masks fixed. The server computes
dL/dZ_m and sends it to agent m, which adds eta <G_m, f_m(X_m)> to its loss.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from otm_fed.mixer import mix
from otm_fed.transport import solve_fgw_plan, uniform


def gaussian_kernel(codes: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """K(i, k) = exp(-||z_i - z_k||^2 / (2 sigma^2)); sigma defaults to the median pairwise
    distance (held constant, not differentiated)."""
    squared = torch.cdist(codes, codes).pow(2)
    if bandwidth is None:
        off_diagonal = squared.detach()[~torch.eye(len(codes), dtype=torch.bool, device=codes.device)]
        median = off_diagonal.median().sqrt().item() if off_diagonal.numel() else 1.0
        bandwidth = median if median > 0 else 1.0
    return torch.exp(-squared / (2.0 * bandwidth**2))


def gw_loss_at_plan(structure_a: torch.Tensor, structure_b: torch.Tensor,
                    plan: torch.Tensor) -> torch.Tensor:
    """sum_{ijkl} |A(i,k) - B(j,l)|^2 T_ij T_kl for symmetric A, B and a fixed plan T:
    p^T (A.A) p + q^T (B.B) q - 2 <A T B, T> with p = T 1, q = T^T 1."""
    p, q = plan.sum(1), plan.sum(0)
    return (p @ structure_a.pow(2) @ p + q @ structure_b.pow(2) @ q
            - 2.0 * ((structure_a @ plan @ structure_b) * plan).sum())


def clustering_plan(kernel: np.ndarray, n_clusters: int) -> np.ndarray:
    """The GW plan T in Pi(mu_B, mu_C) between the kernel K and I_C (eq. 7), by Algorithm 1
    with alpha = 0."""
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be positive, got {n_clusters}")
    plan, _ = solve_fgw_plan(np.zeros((len(kernel), n_clusters)), kernel, np.eye(n_clusters),
                             alpha=0.0, mu_b=uniform(len(kernel)), mu_m=uniform(n_clusters))
    return plan


def clustering_loss(mixed_barycenter: torch.Tensor, n_clusters: int, bandwidth: float | None = None,
                    plan: np.ndarray | None = None) -> torch.Tensor:
    """GW(K(Z~_B), I_C) of eq. 7, differentiable in Z~_B with the GW plan held fixed.

    The plan is solved at the current codes unless given (tests fix it to check gradients).
    """
    kernel = gaussian_kernel(mixed_barycenter, bandwidth)
    if plan is None:
        plan = clustering_plan(kernel.detach().cpu().double().numpy(), n_clusters)
    identity = torch.eye(n_clusters, dtype=kernel.dtype, device=kernel.device)
    plan_t = torch.as_tensor(plan, dtype=kernel.dtype, device=kernel.device)
    return gw_loss_at_plan(kernel, identity, plan_t)


def modality_gradients(codes: Sequence[np.ndarray], transport_plans: Sequence[np.ndarray],
                       masks: np.ndarray,
                       loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> list[np.ndarray]:
    """G_m = dL(Z~_B)/dZ_m through eq. 3 with plans and masks fixed, for every modality.

    ``loss_fn`` maps Z~_B (a float64 tensor) to a scalar; the result has each Z_m's shape.
    """
    leaves = [torch.tensor(np.asarray(z, dtype=np.float64), requires_grad=True) for z in codes]
    plans = [torch.as_tensor(np.asarray(t, dtype=np.float64)) for t in transport_plans]
    mask_t = torch.as_tensor(np.asarray(masks, dtype=np.float64))
    loss_fn(mix(leaves, plans, mask_t)).backward()
    return [leaf.grad.numpy().copy() for leaf in leaves]
