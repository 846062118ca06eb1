"""otm_fed.optim.Adam against torch.optim.Adam: bit-identical parameters and state over several
steps, across a save and restore in the middle, and states that load either way."""

import numpy as np
import pytest
import torch

from otm_fed.optim import Adam


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.unused = torch.nn.Linear(2, 2)  # never gets a gradient: skipped, no state, as in torch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def model_and_data(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return Net(), torch.randn(32, 7), torch.randn(32, 3)


def train(model: torch.nn.Module, optimiser, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        optimiser.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimiser.step()


def through_numpy(state: dict) -> dict:
    """The round trip ModalityAgent.state_arrays / load_state_arrays makes (``optim.{index}.{slot}``)."""
    arrays = {f"optim.{index}.{slot}": np.asarray(value.detach().numpy())
              for index, slots in state["state"].items() for slot, value in slots.items()}
    restored: dict[int, dict] = {}
    for name, value in arrays.items():
        _, index, slot = name.split(".")
        restored.setdefault(int(index), {})[slot] = torch.from_numpy(np.array(value))
    return {"state": restored}


def assert_same(ours: tuple, theirs: tuple) -> None:
    (model_a, optimiser_a), (model_b, optimiser_b) = ours, theirs
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)
    state_a, state_b = optimiser_a.state_dict()["state"], optimiser_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) == 4
    for index in state_a:
        assert list(state_a[index]) == list(state_b[index]) == ["step", "exp_avg", "exp_avg_sq"]
        for slot in state_a[index]:
            assert state_a[index][slot].dtype == state_b[index][slot].dtype
            assert torch.equal(state_a[index][slot], state_b[index][slot]), slot


@pytest.mark.parametrize("foreach", [None, False, True])  # None: torch's default, single-tensor on the CPU
def test_adam_is_bitwise_torch_adam_across_a_restore(foreach: bool | None) -> None:
    model_a, x, y = model_and_data()
    model_b, _, _ = model_and_data()
    ours = Adam(list(model_a.parameters()), lr=0.01)
    theirs = torch.optim.Adam(model_b.parameters(), lr=0.01, foreach=foreach)
    train(model_a, ours, x, y, 6)
    train(model_b, theirs, x, y, 6)
    assert_same((model_a, ours), (model_b, theirs))
    # A fresh process restores weights and moments, then goes on.
    model_c, _, _ = model_and_data(seed=1)
    model_c.load_state_dict(model_a.state_dict())
    restored = Adam(list(model_c.parameters()), lr=0.01)
    restored.load_state_dict(through_numpy(ours.state_dict()))
    train(model_c, restored, x, y, 5)
    train(model_b, theirs, x, y, 5)
    assert_same((model_c, restored), (model_b, theirs))


def test_states_load_either_way() -> None:
    """A checkpoint written with torch.optim.Adam continues exactly under ours, and back."""
    model_a, x, y = model_and_data()
    model_b, _, _ = model_and_data()
    theirs = torch.optim.Adam(model_a.parameters(), lr=0.001)
    train(model_a, theirs, x, y, 3)
    model_b.load_state_dict(model_a.state_dict())
    ours = Adam(list(model_b.parameters()), lr=0.001)
    ours.load_state_dict(through_numpy(theirs.state_dict()))
    train(model_a, theirs, x, y, 3)
    train(model_b, ours, x, y, 3)
    assert_same((model_b, ours), (model_a, theirs))
    back = torch.optim.Adam(model_b.parameters(), lr=0.001)
    back.load_state_dict({**back.state_dict(), **through_numpy(ours.state_dict())})
    train(model_a, theirs, x, y, 2)
    train(model_b, back, x, y, 2)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)
