"""Adam without ``torch.optim``'s machinery.

Building a ``torch.optim.Adam`` imports ``torch._dynamo`` (about 4 s), which Flower's deployment
engine pays on every message since it starts one ClientApp process per message. ``Adam`` here
is the same algorithm with the same numbers: the operations of torch's single-tensor Adam
(``torch.optim.adam._single_tensor_adam``, what ``torch.optim.Adam(params, lr)`` runs on the
CPU: foreach kernels are only chosen on accelerators), in the same order and float32 arithmetic,
bit for bit (tested against torch's default, single-tensor and foreach paths on the CPU), and
the same ``state_dict()["state"]`` layout (``{index: {"step", "exp_avg", "exp_avg_sq"}}``,
``step`` a float32 scalar tensor), so saved agent states load either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

SLOTS = ("step", "exp_avg", "exp_avg_sq")


class Adam:
    """Adam (Kingma and Ba) with torch's defaults: no weight decay, no AMSGrad; a parameter
    without a gradient is skipped and gets no state, as in torch."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Gradients set to None (torch's default, ``set_to_none=True``)."""
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            state = self.state.get(index)
            if state is None:
                state = self.state[index] = {"step": torch.tensor(0.0, dtype=torch.float32),
                                             "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                                             "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
            grad, exp_avg, exp_avg_sq = param.grad, state["exp_avg"], state["exp_avg_sq"]
            state["step"] += 1
            step = state["step"].item()
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-(self.lr / bias_correction1))

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {slot: tensor}}}``, the ``state`` part of torch's layout."""
        return {"state": self.state}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replaces the whole state with copies of ``state_dict["state"]``'s tensors, the moments
        cast to their parameter's dtype and device and ``step`` kept as it comes, as torch does
        (a step restored through Flower's records has shape (1,), and keeps it)."""
        self.state = {}
        for index, slots in state_dict["state"].items():
            param = self.params[int(index)]
            if set(slots) != set(SLOTS):
                raise ValueError(f"Adam state of parameter {index} has slots {sorted(slots)}, expected {list(SLOTS)}")
            self.state[int(index)] = {
                "step": slots["step"].detach().clone(),
                "exp_avg": slots["exp_avg"].detach().to(param, copy=True),
                "exp_avg_sq": slots["exp_avg_sq"].detach().to(param, copy=True)}
