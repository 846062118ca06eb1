"""The Flower ServerApp and its strategy (OTMStrategy), a thin adapter over otm_fed."""

import os

# The server hands POT numpy arrays only. Without this, ``import ot`` loads torch (about 200 MB
# resident) into processes that never train: the ServerApp and the simulation's driver.
os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
