"""The launcher: the ``otm-fed`` command, the simulation and in-process engines and the deployment
helpers. It runs both Flower apps (``server/`` and ``clients/``) and is imported by neither."""

import os

# The launcher hands POT numpy arrays only. Without this, ``import ot`` loads torch (about 200 MB
# resident) into processes that never train: the ServerApp and the simulation's driver.
os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
