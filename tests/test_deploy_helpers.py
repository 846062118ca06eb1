"""Deployment helpers without starting anything: certificates chain to the CA, node keys load the
way flower-supernode and `flwr supernode register` load them, the federation entry is kept."""

import tomllib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key

from launcher.deploy import (LocalFederation, RunFailed, make_certificates, make_node_key, node_config_text,
                             work_folder, write_federation)
from otm_fed.results import RunFolderError


def test_server_certificate_is_signed_by_the_ca_for_the_given_hosts(tmp_path):
    certificates = make_certificates(tmp_path, ["link.example.org", "10.0.0.5"])
    ca = x509.load_pem_x509_certificate(certificates.ca.read_bytes())
    server = x509.load_pem_x509_certificate(certificates.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["link.example.org"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert certificates.server_key.stat().st_mode & 0o077 == 0  # the private key is not world-readable


def test_node_key_pair_loads_as_flower_loads_it(tmp_path):
    private, public = make_node_key(tmp_path, "site-0")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert try_load_public_key(public)  # what `flwr supernode register` accepts


def test_federation_entry_is_added_next_to_existing_ones(tmp_path):
    (tmp_path / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    write_federation(tmp_path, "hospitals", "link.example.org:9093", tmp_path / "ca.crt")
    table = tomllib.loads((tmp_path / "config.toml").read_text())["superlink"]
    assert table["default"] == "local" and table["local"] == {"address": ":local:"}
    assert table["hospitals"] == {"address": "link.example.org:9093", "root-certificates": str(tmp_path / "ca.crt")}


def test_node_config_is_toml_with_quoted_paths(tmp_path):
    text = node_config_text(2, tmp_path / "site.npz", tmp_path / "state")
    assert tomllib.loads(text.replace(" ", "\n")) == {"modality": 2, "data-path": str(tmp_path / "site.npz"),
                                                      "state-dir": str(tmp_path / "state")}


def test_a_site_reading_its_own_single_view_file_holds_what_the_simulation_gives_it(tmp_path):
    import numpy as np

    from otm_fed.scenario import modality_data, scenario_dataset
    from otm_fed.config import resolve_config

    config = resolve_config("synthetic", {"synthetic-samples": "120"})
    dataset = scenario_dataset(config)
    np.savez(tmp_path / "site-1.npz", X0=dataset.views[1], y=dataset.labels)
    np.savez(tmp_path / "all.npz", **{f"X{m}": view for m, view in enumerate(dataset.views)}, y=dataset.labels)
    expected = modality_data(config, 1)
    for path in (tmp_path / "site-1.npz", tmp_path / "all.npz"):
        site = modality_data(config, 1, str(path))
        np.testing.assert_array_equal(site.train, expected.train)
        np.testing.assert_array_equal(site.labels, expected.labels)


def test_server_app_process_never_loads_torch():
    """The server trains nothing: its process (flwr-serverapp in deployment) stays free of torch,
    about 200 MB it would otherwise hold."""
    import subprocess
    import sys

    check = "import sys, server.server_app; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], timeout=120).returncode == 0


CLIENT_MESSAGES = """
import sys
import numpy as np
from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity
from clients.client_app import app
from otm_fed.config import DEFAULTS
from otm_fed.protocol import query_request, read_codes_reply, train_request
from launcher.inprocess import FIRST_NODE_ID, InProcessGrid
from otm_fed_flwr.records import from_records, to_records

TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
grid = InProcessGrid(app, {**DEFAULTS, "synthetic-samples": 120, "batch-size": 32}, num_nodes=1)

def handle(payload, kind):
    reply = grid.deliver(Message(to_records(payload), dst_node_id=FIRST_NODE_ID, message_type=kind))
    assert not reply.has_error(), reply.error
    return from_records(reply.content)

_, codes, _ = read_codes_reply(handle(query_request(1, 32, 7), "query"), 16, 32)
plan = np.eye(len(codes)) / len(codes)
handle(train_request(1, 32, 7, codes, plan, next_seed=8), "train")
handle(train_request(2, 32, 8, codes, plan), "train")
sys.exit(" ".join(name for name in ("ot", "sklearn", "scipy.optimize", "torch._dynamo") if name in sys.modules) or None)
"""


def test_client_app_process_loads_only_what_a_message_needs():
    """Flower's deployment engine starts a ClientApp process per message, so whatever it imports
    is paid per message: a QUERY and two TRAINs (restored from Context.state) load neither POT
    (about 5 s) nor scikit-learn and scipy.optimize (evaluation only) nor torch._dynamo (which
    building a torch.optim optimiser imports, about 4 s). torch.optim itself comes with
    ``import torch``."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", CLIENT_MESSAGES], timeout=180, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_benchmark_work_folder_is_new_unless_named_and_a_named_one_must_be_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = work_folder(None, "bench")
    assert made.parent == tmp_path / "runs" and made.name.startswith("bench-") and not any(made.iterdir())
    assert work_folder(tmp_path / "named", "bench") == tmp_path / "named" and (tmp_path / "named").is_dir()
    (tmp_path / "named" / "floor-1.json").write_text("[]")
    with pytest.raises(RunFolderError, match="holds an earlier run's files"):
        work_folder(tmp_path / "named", "bench")


def test_a_run_that_cannot_start_says_why_in_one_line(tmp_path):
    """A folder that is no Flower app: ``flwr run`` exits 1 with its message in a box."""
    federation = LocalFederation(tmp_path, tmp_path / "unused.npz", n_nodes=0)
    with pytest.raises(RunFailed) as error:
        federation.run(tmp_path, {"rounds": 1}, timeout=120)
    assert str(error.value) == (f"flwr run {tmp_path} started no run: Error Failed to load Flower App configuration "
                                f"in '{tmp_path / 'pyproject.toml'}'. File may be missing or invalid.")


def test_a_site_node_config_names_its_site_and_the_demo_writes_each_site_its_rows_and_anchors(tmp_path):
    import numpy as np

    from launcher.cli import write_site_files
    from launcher.deploy import node_config_text
    from otm_fed.config import resolve_config
    from otm_fed.scenario import anchor_samples, read_anchor_file, scenario_dataset

    text = node_config_text(1, tmp_path / "site.npz", tmp_path / "state", site=2, anchors_file=tmp_path / "a.txt")
    assert tomllib.loads(text.replace(" ", "\n"))["site"] == 2
    assert tomllib.loads(text.replace(" ", "\n"))["anchors-file"] == str(tmp_path / "a.txt")
    plain = tomllib.loads(node_config_text(1, tmp_path / "site.npz", tmp_path / "state").replace(" ", "\n"))
    assert "site" not in plain and "anchors-file" not in plain
    config = resolve_config("synthetic", {"synthetic-samples": "120", "sites": "3", "anchors": "12"})
    dataset = scenario_dataset(config)
    files = write_site_files(config, dataset, 3, tmp_path / "sites")
    assert sorted(files) == [(m, s) for m in range(3) for s in range(3)]
    for modality in range(3):
        held = [np.load(files[(modality, site)].data) for site in range(3)]
        assert sum(len(part["y"]) for part in held) == 120
        rows = np.concatenate([part["X0"] for part in held])
        assert np.unique(rows, axis=0).shape == dataset.views[modality].shape  # every row once
        found = np.full((12, dataset.views[modality].shape[1]), np.nan)
        for site, part in enumerate(held):  # each anchor at one site, at the row its file names
            positions, anchor_rows = read_anchor_file(str(files[(modality, site)].anchors), len(part["y"]), 12)
            assert np.isnan(found[positions]).all()
            found[positions] = part["X0"][anchor_rows]
        np.testing.assert_array_equal(found, dataset.views[modality][anchor_samples(config, dataset)])