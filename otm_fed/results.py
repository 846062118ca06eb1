"""The run folder: resolved config, one JSON line per round, and the final summary.

Every file is written atomically (a temporary file in the same folder, flushed, then renamed
over the old one), so a crash leaves either the old or the new version, never half of one: a
crash loses at most the round in flight. The server's checkpoint (``server-state.json``: the last
completed round and what the strategy keeps across rounds) is written after each round's line;
``resume`` continues from it. A folder that already holds a run is refused unless the run is
resumed, so two runs never mix their lines; default folder names are unique (``new_run_dir``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tomli_w

from otm_fed.data import dataset_file

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.toml", "metrics.jsonl", "summary.json"
CHECKPOINT_FILE = "server-state.json"
EVAL_CODES_FILE = "eval-codes.npz"
SITE_AVERAGE_FILE = "site-average.npz"  # FedAvg weights waiting for the next round (several sites per modality)
RUN_FILES = (METRICS_FILE, SUMMARY_FILE, CHECKPOINT_FILE)
"""Files that only a run that has started rounds writes (``config.toml`` is written before)."""
PROVENANCE = "provenance"
"""The table of config.toml (and key of summary.json) that records what the run read and ran."""
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
GATE_CLOSED, NO_PARTNER = "gate closed", "no other modality to mix with"
TEACHER = "a teacher: its codes were mixed, but the others' were never better clustered than its own"
NO_MIXING_BY_DESIGN = "local-only: no mixing by design"
"""Why a modality trained alone (``trained_alone_because`` in the summary's ``mixing`` record)."""


class RunFolderError(ValueError):
    """A run folder that cannot be used: not writable, or holding another run."""


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


def write_atomically(path: Path, data: str | bytes) -> None:
    """``path`` holds exactly ``data`` or its old content, whatever happens during the write;
    concurrent writers of the same path never share a temporary file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode() if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide a run folder from its readers
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def holds_run(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a run that has started rounds."""
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


def open_run_dir(run_dir: str | Path, resume: bool = False) -> Path:
    """``run_dir`` created and checked writable; one that holds a run is refused unless ``resume``."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create the run folder {run_dir}: {error.strerror}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write into the run folder {run_dir}: permission denied")
    if not resume and holds_run(run_dir):
        raise RunFolderError(f"{run_dir} already holds a run; resume it (run config resume=true) "
                             "or write to another folder")
    return run_dir


RUN_DIR_PATTERN = "runs/SCENARIO-STRATEGY-YYYYMMDD-HHMMSS-MICROSECONDS"
"""The default run folder, relative to the current directory, as ``new_run_dir`` names it."""


def new_folder(root: str | Path, prefix: str) -> Path:
    """A new, empty folder ``ROOT/PREFIX-YYYYmmdd-HHMMSS-microseconds``, created here (with ``-1``,
    ``-2``, ... appended should another process have taken the name first)."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now // 1_000_000_000)) + f"-{now // 1000 % 1_000_000:06d}"
    base = f"{prefix}-{stamp}"
    for attempt in itertools.count():
        candidate = Path(root) / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as error:
            raise RunFolderError(f"cannot create the run folder {candidate}: {error.strerror}") from None
        return candidate
    raise AssertionError("unreachable")


def new_run_dir(config: Mapping[str, Any], root: str | Path = "runs") -> Path:
    """A new, empty run folder ``ROOT/SCENARIO-STRATEGY-YYYYmmdd-HHMMSS-microseconds``
    (``RUN_DIR_PATTERN``): the one definition of a default run folder."""
    safe = functools.partial(re.sub, r"[^\w.-]+", "-")
    return new_folder(root, f"{safe(str(config['scenario']))}-{safe(str(config['strategy']))}")


@functools.lru_cache(maxsize=8)
def file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file (cached on its path, size and modification time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The installed package's version and, from a git checkout, its commit (``-dirty`` when
    tracked files differ from it)."""
    version = {"otm-fed-version": metadata.version("otm-fed")}
    try:
        commit = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return {**version, "git-commit": commit + ("-dirty" if dirty else "")}


def provenance(config: Mapping[str, Any]) -> dict[str, str]:
    """What a run read and ran: the resolved data file and its SHA-256 (where this process can
    see it: the server of a deployment holds no data), the package version and git commit."""
    record = dict(code_version())
    path = dataset_file(config["dataset"], config["data-dir"] or None)
    if path is not None and path.is_file():
        stat = path.resolve().stat()
        record.update({"data-file": str(path.resolve()),
                       "data-sha256": file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)})
    return record


class RunRecorder:
    """Writes one run's files into ``run_dir`` (refused when it holds another run, unless the
    config resumes it). Resuming a finished run with more rounds extends it: the summary lists
    the earlier lengths under ``extended_from`` and each new round's line carries
    ``extension_of`` (the length of the run it extends)."""

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any]) -> None:
        self.run_dir = open_run_dir(run_dir, config["resume"])
        self.provenance = provenance(config)
        write_atomically(self.run_dir / CONFIG_FILE, tomli_w.dumps({**config, PROVENANCE: self.provenance}))
        self.metrics_path = self.run_dir / METRICS_FILE
        self.rounds = config["rounds"]
        finished = read_summary(self.run_dir) if config["resume"] else None
        self.extended_from: list[int] = []
        if finished is not None and config["rounds"] > finished["rounds"]:
            self.extended_from = [*finished.get("extended_from", []), finished["rounds"]]

    def record_round(self, row: Mapping[str, Any]) -> None:
        if self.extended_from and row["round"] > self.extended_from[-1]:
            row = {**row, "extension_of": self.extended_from[-1]}
        earlier = self.metrics_path.read_text() if self.metrics_path.is_file() else ""
        write_atomically(self.metrics_path, earlier + json.dumps(_plain(row)) + "\n")

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        extension = {"extended_from": self.extended_from} if self.extended_from else {}
        record = {**summary, **extension, PROVENANCE: self.provenance}
        write_atomically(self.run_dir / SUMMARY_FILE, json.dumps(_plain(record), indent=2) + "\n")

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """The server's state after a completed round (``state["round"]``)."""
        write_atomically(self.run_dir / CHECKPOINT_FILE, json.dumps(_plain(state)) + "\n")

    def resume(self) -> dict[str, Any] | None:
        """The last checkpoint, with metrics.jsonl cut back to its round (a round in flight when
        the server died is run again); None when there is none. A run that stopped after its last
        round's checkpoint but before its summary runs that round again (the agents keep earlier
        checkpoints too), so it ends with a summary."""
        state = read_checkpoint(self.run_dir)
        if state is not None and state["round"] >= self.rounds and not is_finished(self.run_dir, state["round"]):
            state = {**state, "round": state["round"] - 1}
        if self.metrics_path.is_file():
            done = state["round"] if state else 0
            kept = [row for row in read_rounds(self.run_dir) if row["round"] <= done]
            write_atomically(self.metrics_path, "".join(json.dumps(row) + "\n" for row in kept))
        return state

    def write_arrays(self, name: str, **arrays: np.ndarray) -> None:
        """A ``.npz`` of named arrays in the run folder."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_atomically(self.run_dir / name, buffer.getvalue())


def write_json(path: str | Path, value: Any) -> None:
    """A benchmark's rows (or any JSON-ready value with numpy scalars) written atomically,
    creating the folder; every benchmark writes its JSON through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(_plain(value), indent=1) + "\n")


def read_rounds(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The server's last checkpoint in ``run_dir``, or None."""
    path = Path(run_dir) / CHECKPOINT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def rounds_done(run_dir: str | Path) -> int:
    """The last round ``run_dir``'s checkpoint records as completed (0 before the first)."""
    return (read_checkpoint(run_dir) or {"round": 0})["round"]


def is_finished(run_dir: str | Path, rounds: int) -> bool:
    """True when the run in ``run_dir`` has completed ``rounds`` rounds and written their summary:
    resuming it without asking for more rounds has nothing to do."""
    summary = read_summary(run_dir)
    return summary is not None and summary["rounds"] >= rounds and rounds_done(run_dir) >= rounds


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The summary of a run that finished, or None."""
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def mixing_lines(mixing: list[Mapping[str, Any]]) -> list[str]:
    """In words, per modality of the summary's ``mixing`` record, whether it mixed and from which
    round; one line when the strategy never mixes."""
    if all(entry["trained_alone_because"] == NO_MIXING_BY_DESIGN for entry in mixing):
        return [f"mixing: {NO_MIXING_BY_DESIGN} (every modality trains alone)"]
    mixed = sum(entry["mixed"] for entry in mixing)
    lines = [f"mixing: {mixed} of {len(mixing)} modalities mixed" if mixed else "mixing: no modality mixed"]
    for entry in mixing:
        state = (f"mixed from round {entry['first_mixed_round']}" if entry["mixed"] else
                 f"never mixed: trained alone ({entry['trained_alone_because']}), identical to local-only")
        lines.append(f"  modality {entry['modality']}: {state}")
    return lines


def format_summary(summary: Mapping[str, Any]) -> str:
    """The final table of a run's summary: scores per modality (a modality held at several sites:
    its sites' scores weighted by their rows, and a table per site) and, where the run computed them
    (simulation), the fused scores of the concatenated aligned codes or late fusion; then what
    mixing did (``mixing_lines``)."""
    final = summary["final"]
    mixing = mixing_lines(summary["mixing"]) if "mixing" in summary else []
    lines = [f"{summary['scenario']} / {summary['strategy']}: {summary['rounds']} rounds, seed {summary['seed']}, "
             f"{summary['wall_seconds']:.1f} s"]
    supervised = [name for name in ("accuracy", "mae") if name in final]
    if supervised:
        name = supervised[0]
        per = ", ".join(f"{v:.4f}" for v in final[f"{name}_per_modality"])
        lines += [f"| {name} | mean | per modality | late fusion |", "|---|---|---|---|",
                  f"| test fold | {final[name]:.4f} | {per} | {final.get(f'late_fusion_{name}', float('nan')):.4f} |"]
        return "\n".join(lines + mixing)
    fused = "fused_purity" in final
    lines += ["| metric | mean | per modality |" + (" fused (concatenated aligned codes) |" if fused else ""),
              "|---|---|---|" + ("---|" if fused else "")]
    for name in ("purity", "acc", "nmi", "ari"):
        per = ", ".join(f"{v:.4f}" for v in final.get(f"{name}_per_modality", []))
        row = f"| {name} | {final.get(name, float('nan')):.4f} | {per} |"
        lines.append(row + (f" {final.get(f'fused_{name}', float('nan')):.4f} |" if fused else ""))
    if "acc_per_site" in final:  # several sites per modality: each on its own evaluation rows
        lines += ["| site (modality.site) | purity | acc | nmi | ari |", "|---|---|---|---|---|"]
        lines += [f"| {site} | " + " | ".join(f"{final[f'{name}_per_site'][site]:.4f}" for name in
                                               ("purity", "acc", "nmi", "ari")) + " |" for site in final["acc_per_site"]]
    return "\n".join(lines + mixing)
