"""The Flower side of the server: ServerApp, strategy, engines and deployment helpers."""

import os

# The server hands POT numpy arrays only. Without this, ``import ot`` loads torch (about 200 MB
# resident) into processes that never train: the ServerApp and the simulation's driver.
os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
