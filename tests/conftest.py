"""Shared fixtures: the real data folder, and Ray shut down once the session ends."""

from pathlib import Path

import pytest
import torch

# The suite's models are tiny and the machine's cores are shared: one thread is several times
# faster than two competing ones (and matches the ClientApp's own setting).
torch.set_num_threads(1)

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "Prokaryotic.mat").is_file():
        pytest.skip(f"real datasets not found in {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session", autouse=True)
def shutdown_ray_at_end():
    yield
    import sys

    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()
