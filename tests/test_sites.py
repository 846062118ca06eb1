"""The topology of several sites per modality (otm_fed.sites): parsing, refusals, and the seeded
IID and Dirichlet splits of a modality's rows."""

import numpy as np
import pytest

from otm_fed.sites import (SiteError, SiteSplit, agent_of_partition, agents_of, batch_shares, parse_site_split, parse_sites,
                           sites_of, split_rows)

LABELS = np.repeat(np.arange(4), [50, 30, 15, 5])  # 100 rows, unbalanced classes


def test_sites_parse_one_count_for_all_or_one_per_modality():
    assert parse_sites("3,3,1", 3) == (3, 3, 1)
    assert parse_sites("2", 3) == (2, 2, 2)
    assert parse_sites(1, 2) == (1, 1)


@pytest.mark.parametrize("text, message", [("3,0,1", "modality 1 no site"), ("3,3", "names 2 modalities"),
                                           ("two", "comma list of integers")])
def test_a_bad_topology_is_one_line(text, message):
    with pytest.raises(SiteError, match=message) as refused:
        parse_sites(text, 3)
    assert "\n" not in str(refused.value)


def test_site_split_parses_iid_and_dirichlet_and_refuses_the_rest():
    assert parse_site_split("iid") == SiteSplit("iid")
    assert parse_site_split("dirichlet:0.5") == SiteSplit("dirichlet", 0.5)
    for text in ("dirichlet:0", "dirichlet:-1", "dirichlet:x", "dirichlet", "iid:3", "random"):
        with pytest.raises(SiteError, match="iid or dirichlet:ALPHA"):
            parse_site_split(text)


def test_iid_deals_every_row_once_in_near_equal_seeded_parts():
    parts = split_rows(LABELS, 3, SiteSplit("iid"), seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert [len(p) for p in parts] == [34, 33, 33]
    again = split_rows(LABELS, 3, SiteSplit("iid"), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other_modality = split_rows(LABELS, 3, SiteSplit("iid"), seed=0, modality=1)
    assert not np.array_equal(parts[0], other_modality[0])  # each modality's sites are drawn apart


def class_shares(parts: list[np.ndarray]) -> np.ndarray:
    """Per site, the share of each class among its rows."""
    return np.array([np.bincount(LABELS[p], minlength=4) / len(p) for p in parts])


def test_dirichlet_skews_the_sites_classes_as_alpha_falls():
    overall = np.bincount(LABELS) / len(LABELS)
    spread = {}
    for alpha in (0.3, 1000.0):
        deviations = []
        for seed in range(10):
            try:
                parts = split_rows(LABELS, 3, SiteSplit("dirichlet", alpha), seed=seed)
            except SiteError:
                continue
            assert sorted(np.concatenate(parts).tolist()) == list(range(100))
            deviations.append(np.abs(class_shares(parts) - overall).sum(1).mean())
        spread[alpha] = float(np.mean(deviations))
    assert spread[1000.0] < 0.1 < 0.4 < spread[0.3]


def test_a_split_that_empties_a_site_or_has_more_sites_than_rows_is_refused():
    with pytest.raises(SiteError, match="without rows"):
        for seed in range(20):  # at alpha 0.01 most draws put a class wholly on one site
            split_rows(LABELS, 8, SiteSplit("dirichlet", 0.01), seed=seed)
    with pytest.raises(SiteError, match="fewer than its 101 sites"):
        split_rows(LABELS, 101, SiteSplit("iid"), seed=0)


def test_fedavg_weights_each_site_by_its_rows_and_refuses_mismatched_models():
    from otm_fed.sites import average_weights
    from otm_fed_flwr.records import array_record

    a = {"w": np.array([[1.0, 2.0]], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
    b = {"w": np.array([[4.0, 8.0]], dtype=np.float32), "b": np.array([3.0], dtype=np.float32)}
    mean = average_weights([a, b], [30, 10])
    np.testing.assert_allclose(mean["w"], [[1.75, 3.5]])
    np.testing.assert_allclose(mean["b"], [0.75])
    assert mean["w"].dtype == np.float32
    assert average_weights([a], [5])["w"].tolist() == a["w"].tolist()
    with pytest.raises(SiteError, match="site 1 holds other arrays"):
        average_weights([a, {"w": a["w"]}], [1, 1])


def test_a_topology_that_does_not_fit_the_data_is_refused_before_any_round():
    from otm_fed.config import ConfigError, resolve_config
    from otm_fed.scenario import check_fits, scenario_dataset

    small = {"synthetic-samples": "60", "batch-size": "20"}
    for overrides, message in (({"sites": "2,2"}, "sites names 2 modalities, the data has 3"),
                               ({"sites": "61"}, "60 rows, fewer than its 61 sites"),
                               ({"sites": "6", "site-split": "dirichlet:0.01"}, "without rows")):
        config = resolve_config("synthetic", {**small, **overrides})
        with pytest.raises(ConfigError, match=message):
            check_fits(config, scenario_dataset(config))
    fitting = resolve_config("synthetic", {**small, "sites": "3,2,1", "site-split": "dirichlet:0.5"})
    check_fits(fitting, scenario_dataset(fitting))


def test_partitions_play_the_sites_modality_major():
    assert agents_of((3, 2, 1)) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]
    assert agent_of_partition(4, (3, 2, 1)) == (1, 1)
    with pytest.raises(SiteError, match="partition 6 does not exist"):
        agent_of_partition(6, (3, 2, 1))
    assert sites_of("3,2,1", 1) == 2 and sites_of("4", 7) == 4
    with pytest.raises(SiteError, match="modality 3 is not among them"):
        sites_of("3,2,1", 3)


def test_batch_shares_are_proportional_to_rows_and_sum_to_the_batch():
    shares = batch_shares({(0, 0): 400, (0, 1): 300, (0, 2): 333, (1, 0): 10, (1, 1): 5}, 256)
    assert shares[(0, 0)] + shares[(0, 1)] + shares[(0, 2)] == 256
    assert shares == {(0, 0): 99, (0, 1): 74, (0, 2): 83, (1, 0): 10, (1, 1): 5}  # 99.2, 74.4, 82.5: remainders
    assert batch_shares({(0, 0): 1000, (0, 1): 1}, 100) == {(0, 0): 99, (0, 1): 1}  # every site sends a row


def test_fedavg_within_a_modality_is_flowers_fedavg_aggregation():
    """average_weights against Flower's own aggregate_arrayrecords (ArrayRecords in, weighted by
    num-examples): the same arrays, to float32 precision (ours sums in float64)."""
    from flwr.app import MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from otm_fed.sites import average_weights
    from otm_fed_flwr.records import array_record

    rng = np.random.default_rng(3)
    sites = [{"encoder.0.weight": rng.normal(size=(8, 5)).astype(np.float32),
              "encoder.0.bias": rng.normal(size=8).astype(np.float32)} for _ in range(3)]
    rows = [80, 33, 120]
    flower = aggregate_arrayrecords([RecordDict({"arrays": array_record(site), "metrics": MetricRecord({"num-examples": n})})
                                     for site, n in zip(sites, rows)], "num-examples")
    ours = average_weights(sites, rows)
    for name, array in flower.items():
        np.testing.assert_allclose(ours[name], array.numpy(), rtol=1e-6, atol=1e-7)
        assert ours[name].dtype == np.float32
