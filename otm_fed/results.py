"""The run folder: resolved config, one JSON line per round, and the final summary.

Every line is flushed as soon as its round ends, and the summary is written atomically
(write, then rename), so a crash loses at most the round in flight. The server's checkpoint
(``server-state.json``: the last completed round and what the strategy keeps across rounds) is
written atomically after each round's line; ``resume`` continues from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tomli_w

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.toml", "metrics.jsonl", "summary.json"
CHECKPOINT_FILE = "server-state.json"
EVAL_CODES_FILE = "eval-codes.npz"


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays become Python numbers and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class RunRecorder:
    """Writes one run's files into ``run_dir``."""

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.run_dir / CONFIG_FILE, tomli_w.dumps(dict(config)))
        self.metrics_path = self.run_dir / METRICS_FILE

    def record_round(self, row: Mapping[str, Any]) -> None:
        with self.metrics_path.open("a") as stream:
            stream.write(json.dumps(_plain(row)) + "\n")

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_atomically(self.run_dir / SUMMARY_FILE, json.dumps(_plain(summary), indent=2) + "\n")

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """The server's state after a completed round (``state["round"]``)."""
        write_atomically(self.run_dir / CHECKPOINT_FILE, json.dumps(_plain(state)) + "\n")

    def resume(self) -> dict[str, Any] | None:
        """The last checkpoint, with metrics.jsonl cut back to its round (a round in flight when
        the server died is run again); None when there is none."""
        path = self.run_dir / CHECKPOINT_FILE
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        kept = [row for row in read_rounds(self.run_dir) if row["round"] <= state["round"]] if self.metrics_path.is_file() else []
        write_atomically(self.metrics_path, "".join(json.dumps(row) + "\n" for row in kept))
        return state


    def write_arrays(self, name: str, **arrays: np.ndarray) -> None:
        """A ``.npz`` of named arrays in the run folder."""
        np.savez_compressed(self.run_dir / name, **arrays)


def write_json(path: str | Path, value: Any) -> None:
    """A benchmark's rows (or any JSON-ready value with numpy scalars) written atomically,
    creating the folder; every benchmark writes its JSON through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(_plain(value), indent=1) + "\n")


def read_rounds(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
