"""Deployment helpers: TLS certificates, node keys, the federation entry, and a local federation.

A real deployment runs one SuperLink (the server site) and one SuperNode per modality site;
``LocalFederation`` starts them all on this machine for a demo or a test (127.0.0.1, free
ports), and stops every process it started by its PID. Everything is written with the
``cryptography`` package that Flower already depends on:

- ``make_certificates``: a CA and a server certificate for the SuperLink (TLS);
- ``make_node_key``: a SuperNode's EC key pair in OpenSSH format (node authentication);
- ``write_federation``: the SuperLink connection entry in ``$FLWR_HOME/config.toml`` for ``flwr``.

``stop_local_superlinks`` stops the SuperLink that ``flwr run`` starts for a local simulation
and leaves running, detached, with its SuperExec child.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otm_fed.results import RunFolderError, new_folder

CERT_DAYS = 365
OFFLINE_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
               "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
# How often a SuperExec (the one beside the SuperLink, and each SuperNode's) asks for a new app
# process to start: Flower's default, 1 s, lets each message wait up to 1 s; a poll is one local call.
SUPEREXEC_POLL_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}


class RunFailed(RuntimeError):
    """A ``flwr run`` that did not start, or whose ServerApp refused to run or failed."""


@dataclass(frozen=True)
class Certificates:
    """The SuperLink's TLS files: ``ca`` goes to every site, ``server_key`` never leaves the server."""

    ca: Path
    server_cert: Path
    server_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, encoding: serialization.Encoding,
               key_format: serialization.PrivateFormat) -> None:
    path.write_bytes(key.private_bytes(encoding, key_format, serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(out_dir: str | Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> Certificates:
    """A self-signed CA and a server certificate it signs, valid for ``hosts`` (names or IPs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("otm-fed CA")).issuer_name(_name("otm-fed CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
                   .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA256()))
    certificates = Certificates(out_dir / "ca.crt", out_dir / "server.pem", out_dir / "server.key")
    certificates.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out_dir / "ca.key", ca_key, serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8)
    certificates.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(certificates.server_key, server_key, serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8)
    return certificates


def make_node_key(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's EC (NIST P-384) key pair in OpenSSH format: (private key, public key).

    The private key stays at the site; the public key is registered with the SuperLink."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = out_dir / name, out_dir / f"{name}.pub"
    _write_key(private, key, serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return private, public


def write_federation(flwr_home: str | Path, name: str, address: str, root_certificates: str | Path) -> Path:
    """Add (or replace) the SuperLink connection ``name`` in ``$FLWR_HOME/config.toml``."""
    path = Path(flwr_home) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = tomllib.loads(path.read_text()) if path.is_file() else {}
    superlink = table.setdefault("superlink", {})
    superlink.setdefault("default", name)
    superlink[name] = {"address": address, "root-certificates": str(Path(root_certificates).resolve())}
    path.write_text(tomli_w.dumps(table))
    return path


def work_folder(out: str | Path | None, prefix: str) -> Path:
    """A benchmark's work folder: a new ``runs/PREFIX-YYYYmmdd-HHMMSS-microseconds`` unless ``out``
    names one, which must be empty or absent, so that no earlier run's files are read as this one's."""
    if out is None:
        return new_folder("runs", prefix).resolve()
    out = Path(out).resolve()
    if out.is_dir() and any(out.iterdir()):
        raise RunFolderError(f"{out} holds an earlier run's files; choose an empty --out (or none, for a new folder)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def add_work_folder_option(parser: argparse.ArgumentParser, prefix: str) -> None:
    """A deployment benchmark's ``--out``: its work folder (``work_folder``)."""
    parser.add_argument("--out", help="an empty work folder for keys, logs and run folders (default: a new "
                        f"folder runs/{prefix}-YYYYMMDD-HHMMSS-MICROSECONDS)")


def open_work_folder(out: str | None, prefix: str, program: str) -> Path:
    """``work_folder``, or the benchmark ``program`` stops saying why in one line; the folder is printed."""
    try:
        work = work_folder(out, prefix)
    except RunFolderError as error:
        raise SystemExit(f"{program}: {error}") from None
    print(f"work folder {work}", flush=True)
    return work


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with code {process.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


BIN_DIR = Path(sys.executable).parent  # Flower's commands live beside this Python


def flower_bin(name: str) -> str:
    """A Flower command from this Python's environment."""
    return str(BIN_DIR / name)


def superlink_command(port: int, certificates: Certificates, database: str | Path, node_auth: bool = True) -> list[str]:
    command = [flower_bin("flower-superlink"), "--port", str(port), "--host", "127.0.0.1",
               "--ssl-ca-certfile", str(certificates.ca), "--ssl-certfile", str(certificates.server_cert),
               "--ssl-keyfile", str(certificates.server_key), "--database", str(database),
               "--disable-runtime-dependency-installation"]
    return command + (["--enable-supernode-auth"] if node_auth else [])


def node_config_text(modality: int, data_path: str | Path, state_dir: str | Path, site: int = 0,
                     anchors_file: str | Path | None = None) -> str:
    """A SuperNode's ``--node-config``: TOML values, the paths quoted; ``site`` only when not 0,
    ``anchors-file`` only when given."""
    site_text = f" site={int(site)}" if site else ""
    anchors_text = f" anchors-file='{Path(anchors_file).resolve()}'" if anchors_file else ""
    return (f"modality={int(modality)}{site_text} data-path='{Path(data_path).resolve()}' "
            f"state-dir='{Path(state_dir).resolve()}'{anchors_text}")


def supernode_command(superlink: str, ca: str | Path, private_key: str | Path | None, modality: int,
                      data_path: str | Path, state_dir: str | Path, runtime_port: int, site: int = 0,
                      anchors_file: str | Path | None = None) -> list[str]:
    command = [flower_bin("flower-supernode"), "--superlink", superlink, "--root-certificates", str(ca),
               "--node-config", node_config_text(modality, data_path, state_dir, site, anchors_file),
               "--port", str(runtime_port)]
    return command + (["--auth-supernode-private-key", str(private_key)] if private_key else [])


@dataclass(frozen=True)
class SiteFiles:
    """What one site's SuperNode reads: its data file and, with anchors, its anchors file."""

    data: Path
    anchors: Path | None = None


@dataclass
class LocalFederation:
    """A SuperLink and N SuperNodes on 127.0.0.1 with TLS and node authentication, for a demo or a
    test; ``stop()`` ends every process it started, by PID. Files live in ``work_dir``. Node m
    reads view m of ``data_path``; with ``site_files`` one SuperNode per (modality, site) instead,
    each reading its own file."""

    work_dir: Path
    data_path: Path
    n_nodes: int
    name: str = "otm-local"
    port: int = 0
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    site_files: Mapping[tuple[int, int], SiteFiles] | None = None

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir).resolve()
        self.flwr_home = self.work_dir / "flwr-home"
        self.certificates = make_certificates(self.work_dir / "certs")
        self.port = self.port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        write_federation(self.flwr_home, self.name, self.address, self.certificates.ca)

    @property
    def env(self) -> dict[str, str]:
        # PATH: the SuperLink starts flower-superexec by name, so this environment's commands come first
        return {**os.environ, **OFFLINE_ENV, **SUPEREXEC_POLL_ENV, "FLWR_HOME": str(self.flwr_home),
                "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")])}

    def start_process(self, label: str, command: list[str]) -> subprocess.Popen:
        log = (self.work_dir / f"{label}.log").open("w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                   cwd=self.work_dir, start_new_session=True)
        self.processes[label] = process
        return process

    def start_superlink(self, timeout: float = 60.0) -> None:
        process = self.start_process("superlink", superlink_command(self.port, self.certificates,
                                                                    self.work_dir / "superlink.db"))
        wait_for_port(self.port, timeout, process)

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run a ``flwr`` CLI command against this federation's config (wide, so that no message wraps)."""
        return subprocess.run([flower_bin("flwr"), *args], env={**self.env, "COLUMNS": "1000"}, cwd=self.work_dir,
                              capture_output=True, text=True, timeout=timeout)

    def register(self, public_key: Path) -> None:
        result = self.flwr("supernode", "register", str(public_key), self.name)
        if result.returncode != 0:
            raise RuntimeError(f"flwr supernode register failed: {result.stdout}{result.stderr}")

    def start_supernode(self, modality: int, register: bool = True, label: str | None = None,
                        site: int = 0, files: SiteFiles | None = None) -> subprocess.Popen:
        """A SuperNode for ``modality`` (its ``site``) with its own key (registered unless
        ``register`` is false), reading ``files`` (default the federation's file)."""
        label = label or (f"supernode-{modality}-{site}" if self.site_files else f"supernode-{modality}")
        private, public = make_node_key(self.work_dir / "keys", label)
        if register:
            self.register(public)
        files = files or SiteFiles(self.data_path)
        return self.start_process(label, supernode_command(self.address, self.certificates.ca, private, modality,
                                                           files.data, self.work_dir / "state" / label,
                                                           free_port(), site, files.anchors))

    def start(self) -> "LocalFederation":
        self.start_superlink()
        if self.site_files:
            for (modality, site), files in sorted(self.site_files.items()):
                self.start_supernode(modality, site=site, files=files)
        else:
            for modality in range(self.n_nodes):
                self.start_supernode(modality)
        return self

    def run(self, app_dir: str | Path, run_config: Mapping[str, object], timeout: float = 600.0) -> subprocess.CompletedProcess:
        """``flwr run APP_DIR NAME --stream``: submit the run and follow it to its end. Raises
        RunFailed, with the SuperLink's reason, unless the run finished completed (``flwr run``
        returns 0 when the ServerApp refuses to run, e.g. into a folder holding another run)."""
        overrides = " ".join(f"{key}={toml_value(value)}" for key, value in run_config.items())
        deadline = time.monotonic() + timeout
        result = self.flwr("run", str(app_dir), self.name, "--run-config", overrides, "--stream", timeout=timeout)
        started = re.search(r"Successfully started run (\d+)", result.stdout)
        if result.returncode != 0 or not started:
            raise RunFailed(f"flwr run {app_dir} started no run: "
                            f"{one_line(result.stderr) or one_line(result.stdout)[-300:] or 'no output'}")
        # the stream may end before the run does (a busy SuperLink's database refuses its log
        # request): wait for the run itself, up to the same deadline
        status, details = self.run_status(int(started.group(1)), max(30.0, deadline - time.monotonic()))
        if status != "finished:completed":
            raise RunFailed(f"run {started.group(1)} of {Path(app_dir).name} ended {status}: "
                            f"{details or 'no reason given'} (log: {self.work_dir / 'superlink.log'})")
        return result

    def run_status(self, run_id: int, timeout: float = 30.0) -> tuple[str, str]:
        """The run's final status (``finished:completed``, ``finished:failed``, ...) and its details,
        as ``flwr ls`` reads them; waits for the SuperLink to record the end."""
        deadline = time.monotonic() + timeout
        while True:
            listed = self.flwr("ls", self.name, "--run-id", str(run_id), "--format", "json")
            try:
                run = json.loads(listed.stdout)["runs"][0]
            except (ValueError, KeyError, IndexError):
                run = {}
            status = run.get("status", f"unknown (flwr ls: {(listed.stdout + listed.stderr).strip()[-300:]})")
            if status.startswith("finished") or time.monotonic() > deadline:
                return status, run.get("status-details", "")
            time.sleep(0.5)

    def stop(self, label: str | None = None) -> None:
        """Stop one process (or all) and every process it started (Flower's SuperExec and apps
        run in process groups of their own): SIGTERM, then SIGKILL to whatever lingers."""
        for name in [label] if label else list(self.processes):
            process = self.processes.pop(name)
            terminate(process.pid)
            process.wait()

    def kill(self, label: str) -> None:
        """SIGKILL one process and everything it started, as a crash or a pulled cable would."""
        process = self.processes.pop(label)
        _signal_all([process.pid, *descendants(process.pid)], signal.SIGKILL)
        process.wait()

    def serverapp_pids(self) -> list[int]:
        """The ServerApp processes the SuperLink started (one per run in flight)."""
        return [pid for pid in descendants(self.processes["superlink"].pid)
                if b"flwr-serverapp" in _read_proc(pid, "cmdline")]

    def log(self, label: str) -> str:
        return (self.work_dir / f"{label}.log").read_text()

    def __enter__(self) -> "LocalFederation":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _read_proc(pid: int, name: str) -> bytes:
    try:
        return (Path("/proc") / str(pid) / name).read_bytes()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), read from /proc."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read_proc(int(entry.name), "stat")
            if stat:
                parent_of[int(entry.name)] = int(stat.rsplit(b")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parent_of.items() if parent in frontier]
        found += children
        frontier = children
    return found


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies, already dead, are not)."""
    states = {pid: _read_proc(pid, "stat").rsplit(b")", 1)[-1].split()[:1] for pid in pids}
    return [pid for pid, state in states.items() if state and state != [b"Z"]]


def terminate(pid: int, grace: float = 10.0) -> None:
    """Stop ``pid`` and every process below it: SIGTERM, then, after ``grace`` seconds, SIGKILL to
    whatever lingers."""
    family = [pid, *descendants(pid)]
    _signal_all(family, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(family) and time.monotonic() < deadline:
        time.sleep(0.2)
    family += [child for child in descendants(pid) if child not in family]
    _signal_all(alive(family), signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive(family) and time.monotonic() < deadline:  # SIGKILL takes effect within moments
        time.sleep(0.05)


def default_flwr_home() -> Path:
    """``$FLWR_HOME``, else ``~/.flwr``, as ``flwr`` reads it."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def local_superlinks(flwr_home: str | Path) -> list[int]:
    """This user's SuperLinks that ``flwr run`` started for ``flwr_home``: their log file is
    ``FLWR_HOME/local-superlink/superlink.log``."""
    log_file = (Path(flwr_home) / "local-superlink" / "superlink.log").resolve()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or entry.stat().st_uid != os.getuid():
                continue
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if not any(Path(arg).name == "flower-superlink" for arg in args) or "--log-file" not in args:
                continue
            logged = Path(os.readlink(entry / "cwd")) / args[args.index("--log-file") + 1]
        except (OSError, IndexError):  # a process that ended meanwhile, or another user's
            continue
        if logged.resolve() == log_file:
            found.append(int(entry.name))
    return found


def stop_local_superlinks(flwr_home: str | Path) -> list[int]:
    """Stop the SuperLinks ``flwr run`` left running for ``flwr_home`` and everything they started
    (the SuperExec, any app process); returns the SuperLinks' PIDs."""
    superlinks = local_superlinks(flwr_home)
    for pid in superlinks:
        terminate(pid)
    return superlinks


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in dict.fromkeys(pids):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def one_line(output: str) -> str:
    """``flwr``'s output on one line, without the box it draws around an error."""
    return " ".join(" ".join(line.strip(" \u2502\u256d\u256e\u2570\u256f\u2500") for line in output.splitlines()).split())


def toml_value(value: object) -> str:
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()
