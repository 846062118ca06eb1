"""The benchmarks and studies: the raw k-means anchor, one federated row, the tables, and each
study's measurement on small inputs."""

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS / "studies")]

import clustering  # noqa: E402


def test_raw_kmeans_anchor_on_orl(data_dir):
    row = clustering.raw_kmeans_row("orl", False, 0, str(data_dir))
    # z-score per view, k-means n_init 10, seed 0 (the scenario's normalisation)
    assert row["purity"] == pytest.approx(0.6975, abs=1e-4) and row["acc"] == pytest.approx(0.665, abs=1e-4)
    assert row["purity_per_modality"][0] == row["purity_per_modality"][1]  # two identical views
    assert row["method"] == "raw-kmeans" and 0 < row["fused_purity"] <= 1


def test_federated_row_has_the_documented_fields(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(clustering.METHODS, "otm", {**clustering.METHODS["otm"], "batch-size": "64", "gate-threshold": "0",
                                                   "eval-every": "2"})
    row = clustering.federated_row("orl", "otm", False, 1, 2, str(data_dir), tmp_path, {"neighbour-weight": "1"})
    assert "neighbour-weight = 1.0" in (tmp_path / "orl-otm-unaligned-seed1" / "config.toml").read_text()
    assert {"dataset", "method", "aligned", "seed", "purity", "acc", "nmi", "ari", "purity_per_modality",
            "fused_purity"} <= set(row)
    assert row["rounds"] == 2 and row["seed"] == 1 and row["aligned"] is False
    assert len(row["purity_per_modality"]) == 2 and 0 < row["purity"] <= 1
    assert {"true_mass", "top1", "class_mass"} <= set(row["alignment"])


def test_a_bad_override_for_every_run_is_refused_before_any_run(capsys):
    with pytest.raises(SystemExit):
        clustering.main(["--datasets", "orl", "--methods", "local-only", "--set", "neighbour-weight=heavy"])
    assert "--set: neighbour-weight must be a number" in capsys.readouterr().err


def test_a_later_run_of_the_same_seed_replaces_the_earlier_in_the_tables():
    row = {"dataset": "orl", "method": "otm", "aligned": False, "seed": 7, "acc": 0.5}
    rows = clustering.latest_rows([row, {**row, "seed": 8}, {**row, "acc": 0.6}, {**row, "method": "local-only"}])
    assert sorted((r["method"], r["seed"], r["acc"]) for r in rows) == [("local-only", 7, 0.5), ("otm", 7, 0.6),
                                                                         ("otm", 8, 0.5)]


def test_table_reports_mean_and_std_over_seeds():
    rows = [{"dataset": "orl", "method": "otm", "aligned": False, "seed": seed, "purity": p, "acc": 0.5,
             "nmi": 0.4, "ari": 0.3, "purity_per_modality": [p, p], "fused_purity": 0.6, "fused_acc": 0.55}
            for seed, p in enumerate((0.6, 0.7))]
    table = clustering.markdown_table(rows)
    line = table.splitlines()[-1]
    assert line.startswith("| orl | otm | unaligned | 2 | 0.6500 ± 0.0500 | 0.5000 ± 0.0000 |")
    assert np.isclose(float(line.split("|")[9].split(",")[0]), 0.65)


def test_speed_memory_counts_shared_pages_once_in_pss():
    import os
    import subprocess

    import speed

    child = subprocess.Popen([sys.executable, "-c", "import numpy, time; time.sleep(5)"])
    try:
        rss, pss = speed.tree_memory_bytes(os.getpid())
        alone_rss, alone_pss = speed.tree_memory_bytes(child.pid)
    finally:
        child.kill()
    # the tree includes the child; PSS splits numpy's and Python's shared pages, RSS does not
    assert rss > alone_rss > 0 and pss > alone_pss > 0 and pss < rss


def test_goals_table_pairs_seeds_and_judges_against_the_anchors():
    def row(method, seed, acc, purity=0.7):
        return {"dataset": "orl", "method": method, "aligned": False, "seed": seed, "purity": purity, "acc": acc,
                "fused_acc": acc}
    rows = [row("raw-kmeans", 0, 0.60, 0.66), row("raw-kmeans", 1, 0.62, 0.66),
            row("local-only", 0, 0.60), row("local-only", 1, 0.64),
            row("otm", 0, 0.65), row("otm", 1, 0.68)]
    mean, error, n = clustering.paired_difference(rows, "orl", "acc", "otm", "local-only")
    assert n == 2 and mean == pytest.approx(0.045) and error == pytest.approx(0.005)
    line = clustering.goals_table(rows).splitlines()[-1]
    assert "0.6650 ± 0.0150 | 0.6550 (above)" in line  # mean ACC against the paper's 0.6550
    assert "0.7000 / 0.6650 (above / above)" in line and "+0.0450 ± 0.0050 (2 seeds, clearly above)" in line
    rows += [row("otm-gw", 0, 0.50), row("otm-gw", 1, 0.56), row("otm-w", 0, 0.61), row("otm-w", 1, 0.63)]
    lines = {line.split(" | ")[1]: line for line in clustering.paired_table(rows).splitlines()[2:]}
    assert lines.keys() == {"otm", "otm-w", "otm-gw"}  # never raw k-means or the baseline itself
    assert lines["otm"].endswith("| +0.0450 ± 0.0050 | clearly above |")
    assert lines["otm-gw"].endswith("| -0.0900 ± 0.0100 | clearly below |")
    assert lines["otm-w"].endswith("| +0.0000 ± 0.0100 | tie |")


def test_alignment_table_judges_class_mass_against_chance_per_seed():
    rows = [{"dataset": "synthetic", "method": method, "aligned": False, "seed": seed, "class_mass_excess": excess}
            for method, values in (("otm", (0.30, 0.34, 0.32)), ("otm-paper", (0.10, -0.10, 0.02)))
            for seed, excess in enumerate(values)]
    rows.append({"dataset": "synthetic", "method": "local-only", "aligned": False, "seed": 0})  # no plans
    lines = clustering.alignment_table(rows).splitlines()[2:]
    assert lines == ["| synthetic | otm | 3 | +0.320 ± 0.012 | clearly above |",
                     "| synthetic | otm-paper | 3 | +0.007 ± 0.058 | tie |"]


def test_code_rows_read_a_runs_final_codes(tmp_path):
    import codes

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    separated = rng.standard_normal((100, 4)) + 10.0 * labels[:, None]  # two far-apart clusters
    mixed = 0.1 * rng.standard_normal((100, 4))
    np.savez(tmp_path / "eval-codes.npz", labels=labels, **{"codes-0": separated, "codes-1": mixed})
    rows = codes.code_rows(tmp_path)
    assert [row["modality"] for row in rows] == [0, 1]
    assert rows[0]["purity"] == 1.0 and rows[1]["purity"] < 0.8
    assert rows[0]["rms_norm"] > 10 * rows[1]["rms_norm"]
    with pytest.raises(FileNotFoundError, match="fused-eval"):
        codes.code_rows(tmp_path / "missing")


def test_raw_table_pairs_each_trained_method_with_raw_kmeans_per_seed():
    def row(method, seed, acc, purity):
        return {"dataset": "orl", "method": method, "aligned": False, "seed": seed, "purity": purity, "acc": acc}
    rows = [row("raw-kmeans", 0, 0.60, 0.66), row("raw-kmeans", 1, 0.62, 0.68),
            row("local-only", 0, 0.70, 0.70), row("local-only", 1, 0.74, 0.70),
            row("otm", 0, 0.59, 0.60), row("otm", 1, 0.61, 0.64)]
    lines = clustering.raw_table(rows).splitlines()[2:]
    assert lines == ["| orl | local-only | 2 | +0.0300 ± 0.0100 | clearly above | +0.1100 ± 0.0100 | clearly above |",
                     "| orl | otm | 2 | -0.0500 ± 0.0100 | clearly below | -0.0100 ± 0.0000 | clearly below |"]


def test_local_training_table_means_over_seeds_and_views(data_dir):
    import local_training

    rows = local_training.view_rows("prokaryotic", "short", {"rounds": "2", "epochs": "0", "kmeans-init": "1"}, 0)
    assert [row["view"] for row in rows] == [0, 1, 2] and all(0 < row["acc"] <= 1 for row in rows)
    table = local_training.table(rows + [{**row, "variant": "other", "acc": 1.0} for row in rows])
    assert "| prokaryotic | mean |" in table and table.splitlines()[-1].endswith("| 1.000 |")
    elsewhere = [{**row, "dataset": "other-set"} for row in rows]  # a variant run on one data set only
    assert local_training.table(rows + [{**row, "variant": "other", "acc": 1.0} for row in elsewhere]
                                ).splitlines()[-1].endswith("| - | 1.000 |")
    assert local_training.parse_variants("default,mine=epochs:5;neighbours:3") == {
        "default": {}, "mine": {"epochs": "5", "neighbours": "3"}}


def test_local_training_refresh_finds_the_neighbours_again_from_the_codes_once(data_dir, monkeypatch):
    import local_training
    import otm_fed.agent
    from otm_fed.config import resolve_config
    from otm_fed.scenario import scenario_dataset

    widths = []
    found = otm_fed.agent.nearest_neighbours
    monkeypatch.setattr(otm_fed.agent, "nearest_neighbours", lambda x, k: widths.append(x.shape[1]) or found(x, k))
    local_training.view_rows("prokaryotic", "refresh", {"rounds": "4", "epochs": "0", "kmeans-init": "1",
                                                        "neighbour-refresh": "0.5", "latent-dim": "7"}, 0)
    views = [view.shape[1] for view in scenario_dataset(resolve_config("prokaryotic", {})).views]
    assert widths == [w for view in views for w in (view, 7)]  # the raw view, then the codes at round 2


def test_frame_confidence_reads_a_rotated_copy_as_aligned_and_noise_as_not(tmp_path):
    """The gate's selection tool on saved codes: a rotated copy of clustered codes reads confidence
    near 1 and puts the aligned plans' mass on same-class pairs; independent noise reads near 0."""
    import frame_confidence
    from scipy.stats import ortho_group

    from otm_fed.mixer import OTMixer

    rng = np.random.default_rng(0)
    labels = np.arange(120) % 4
    codes = rng.normal(scale=4.0, size=(4, 6))[labels] + rng.normal(size=(120, 6)) * (0.3 + 0.2 * labels[:, None])
    np.savez(tmp_path / "eval-codes.npz", labels=labels, **{"codes-0": codes, "codes-1": codes @ ortho_group.rvs(6, random_state=1),
                                                             "codes-2": rng.normal(size=(120, 6))})
    rows = frame_confidence.run_rows(tmp_path / "eval-codes.npz", batch=120, trials=1, mixer=OTMixer(max_outer=2), pairs=True)
    confidence, mass, chance = rows[0]["confidence"], rows[0]["class_mass_aligned"], rows[0]["class_mass_chance"]
    assert confidence[1] > 0.9 and abs(confidence[2]) < 0.1
    assert chance[0] == pytest.approx(0.25) and mass[0] > 0.9  # pair (0, 1): the mass stays on each sample's class
    frames = rows[0]["class_mass_frames"]
    assert np.isnan(frames[0]) and frames[1] > 0.9 and frames[2] < 0.5  # the plans the confidence judged
    pairs = {(pair["reference"], pair["modality"]): pair for pair in rows[0]["pairs"]}
    assert len(pairs) == 6 and pairs[(1, 0)]["confidence"] > 0.9 and pairs[(1, 0)]["class_mass_above_chance"] > 0.65
    assert abs(pairs[(1, 2)]["confidence"]) < 0.1
    assert frame_confidence.frame_mass_above_chance(rows[0])[1:] == pytest.approx([frames[1] - chance[0], frames[2] - chance[1]])
    anchored = frame_confidence.run_rows(tmp_path / "eval-codes.npz", batch=120, trials=1, mixer=OTMixer(max_outer=2), n_anchors=10)
    assert anchored[0]["anchors"] == 10 and anchored[0]["confidence"][1] > 0.99 and abs(anchored[0]["confidence"][2]) < 0.3


def test_headroom_ceiling_separates_informative_from_uninformative_views():
    import headroom

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    informative = labels[:, None] * 3.0 + rng.normal(size=(200, 4))
    assert headroom.linear_ceiling(informative, labels) > 0.95
    assert abs(headroom.linear_ceiling(rng.normal(size=(200, 4)), labels) - 0.5) < 0.12
    rows = [{"dataset": "orl", "method": "local-only", "acc_per_modality": [0.5, 0.7]},
            {"dataset": "orl", "method": "local-only", "acc_per_modality": [0.7, 0.9]},
            {"dataset": "orl", "method": "otm", "acc_per_modality": [0.0, 0.0]}]
    assert headroom.local_only_acc(rows, "orl") == pytest.approx([0.6, 0.8])
    assert headroom.local_only_acc(rows, "movies") is None


def test_neighbour_graph_rows_score_the_graph_of_a_real_view(data_dir):
    import neighbour_graph

    rows = neighbour_graph.graph_rows("prokaryotic", 0)
    assert [row["view"] for row in rows] == [0, 1, 2] and all(row["k"] == 10 for row in rows)
    # Prokaryotic view 0: the graph clusters far worse than the raw geometry (docs/findings/local-training.md).
    assert rows[0]["raw_acc"] > 0.75 and rows[0]["graph_acc"] < 0.6
    assert all(0.4 < row["knn_agreement"] < 0.85 for row in rows)
    assert "| prokaryotic | 0 | 10 | 0.775 |" in neighbour_graph.table(rows)


def test_the_studies_refuse_bad_settings_before_any_run(capsys):
    import neighbour_graph

    with pytest.raises(SystemExit):
        neighbour_graph.main(["--datasets", "orl,nosuch"])
    assert "unknown scenario 'nosuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        neighbour_graph.main(["--seeds", "0,x"])
    assert "seeds must be comma-separated integers" in capsys.readouterr().err
    import local_training

    for fraction in ("0", "1.5", "half"):
        with pytest.raises(SystemExit, match="neighbour-refresh must be a fraction of the run"):
            local_training.parse_variants(f"mine=neighbour-refresh:{fraction}")
    assert local_training.parse_variants("mine=neighbour-refresh:1") == {"mine": {"neighbour-refresh": "1"}}
    with pytest.raises(SystemExit, match="settings must be KEY:VALUE"):
        local_training.parse_variants("mine=epochs5")
    import frame_search

    with pytest.raises(SystemExit):
        frame_search.main(["no-such-codes.npz"])
    assert "no such file: no-such-codes.npz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        frame_search.main([__file__, "--variants", "today,nosuch"])
    assert "unknown variant: nosuch" in capsys.readouterr().err


def test_a_missing_rows_file_is_a_usage_error(capsys):
    import local_training
    import neighbour_graph

    for main in (neighbour_graph.main, local_training.main):
        with pytest.raises(SystemExit):
            main(["--table", "no-such-rows.json"])
        assert "no such rows file: no-such-rows.json" in capsys.readouterr().err


def test_joint_matching_ranks_the_truth_first_on_shared_geometry_and_composes_matchings(tmp_path):
    import itertools

    import joint_matching
    from scipy.stats import ortho_group

    rng = np.random.default_rng(0)
    centres, labels = 3 * rng.normal(size=(5, 4)), np.arange(100) % 5
    codes = {f"codes-{m}": (centres[labels] + 0.05 * rng.normal(size=(100, 4))) @ ortho_group.rvs(4, random_state=m)
             for m in range(3)}
    np.savez(tmp_path / "shared.npz", labels=labels, **codes)
    row = joint_matching.codes_row(tmp_path / "shared.npz")
    assert row["pairwise_rank"] == {"0-1": 1, "0-2": 1, "1-2": 1} and row["joint_rank"] == 1 and row["joint_matchings"] == 120 ** 2
    # Modalities 1 and 2 place the classes at permuted centres: the cheapest pair (s_1, s_2) is the
    # one that undoes both permutations, and its third term, GW_12(s_2 o s_1^-1), must then be 0 too.
    permutations = np.array(list(itertools.permutations(range(5))))
    pi_1, pi_2 = rng.permutation(5), rng.permutation(5)
    distances = [joint_matching.centroid_distances(centres[labels], labels, np.arange(5))]
    distances += [distances[0][np.ix_(np.argsort(pi), np.argsort(pi))] for pi in (pi_1, pi_2)]
    costs = joint_matching.joint_costs(distances, permutations)
    best = np.unravel_index(np.argmin(costs), costs.shape)
    assert costs[best] == pytest.approx(0.0, abs=1e-12)
    assert [list(permutations[i]) for i in best] == [list(pi_1), list(pi_2)]
    assert joint_matching.rank_of(costs, (0, 0)) > 1


def test_seeded_draws_redraw_the_synthetic_data_and_read_a_data_file_once(data_dir):
    from otm_fed.scenario import seeded_draws

    synthetic = list(seeded_draws("synthetic", [1, 2]))
    assert [seed for seed, _, _ in synthetic] == [1, 2]
    assert not np.array_equal(synthetic[0][2].views[0], synthetic[1][2].views[0])
    assert [seed for seed, _, _ in seeded_draws("prokaryotic", [1, 2, 3])] == [1]


def test_results_index_has_a_command_for_every_result_and_reads_the_docs_citations(tmp_path):
    import results_index

    listed = results_index.entries()
    assert set(listed) == set(results_index.COMMANDS), "results/ and results_index.COMMANDS disagree"
    assert set(results_index.NOTES) <= set(results_index.COMMANDS)
    text = ("`python benchmarks/clustering.py --table results/a.json,results/b-{x,y}.json`; plots in "
            "results/plots-gate/gate.png, `results/c-*.json` and `results/*.json` (all of them), results/d/.")
    assert results_index.mentions(text) == ["a.json", "b-x.json", "b-y.json", "plots-gate/gate.png", "c-*.json", "d/"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(text)
    for name in ("a.json", "b-y.json", "c-1.json", "d/e.json", "plots-gate/gate.png", "lonely.json"):
        (tmp_path / "results" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / name).write_text("[]")
    entries = results_index.entries(tmp_path / "results")
    assert entries == ["a.json", "b-y.json", "c-1.json", "d/e.json", "lonely.json", "plots-gate"]
    cited = results_index.citations(entries, tmp_path)
    assert [entry for entry in entries if not cited[entry]] == ["lonely.json"]
    assert "Cited by no page: `lonely.json`." in results_index.index(tmp_path)


def test_patients_table_pairs_views_per_seed_and_judges_class_mass_against_chance():
    import patients

    def row(method, seed, accs, mass=None):
        return {"dataset": "synthetic", "cohort": "overlap=0:shift=0.5:paired=0", "method": method, "seed": seed,
                "acc_per_modality": accs, "purity_per_modality": accs, "class_mass": mass,
                "class_mass_chance": None if mass is None else 0.2, "seconds": 1.0, "peak_rss_mb": 100.0}
    rows = [row("local-only", seed, [0.8, 0.5]) for seed in range(3)]
    rows += [row("otm", seed, [0.8 - 0.1 - 0.01 * seed, 0.5 + 0.01 * seed], 0.3 + 0.01 * seed) for seed in range(3)]
    line = patients.table(rows).splitlines()[2]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[5] == "-0.0500 ± 0.0000 (clearly below)"  # mean over views, paired per seed
    assert cells[6] == "[0]" and cells[7] == "none"  # view 1 gains 0.00, 0.01, 0.02: a tie
    assert cells[8] == "+0.1100 ± 0.0058 (clearly above)"


def test_a_patients_cohort_cuts_the_batch_to_the_smallest_modality():
    import patients
    from otm_fed.scenario import held_rows, scenario_dataset

    config = patients.cohort_config("synthetic", patients.parse_cohort("overlap=0:shift=0.5"), "otm", 0)
    data = scenario_dataset(config)
    assert config["batch-size"] == min(len(held_rows(config, data, m)) for m in range(3)) == 123
    paired = patients.cohort_config("synthetic", patients.parse_cohort("overlap=0:paired=0.1"), "otm", 0)
    assert paired["anchors"] == 60 and paired["overlap"] == 0.0 and paired["batch-size"] == 128
    with pytest.raises(ValueError, match="unknown cohort part 'share'"):
        patients.parse_cohort("share=0.5")


def test_unbalanced_study_scores_class_mass_against_chance_and_the_balanced_ceiling():
    import unbalanced_plans

    plan = np.eye(4) / 4
    scores = unbalanced_plans.class_scores(plan, np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    assert scores == {"class_mass": 0.75, "chance": 0.5, "ceiling": 0.75, "moved": 1.0}


def test_partial_transport_keeps_shifted_classes_apart_where_a_balanced_plan_cannot():
    """Two classes far apart, held 6:2 in one batch and 2:6 in the other: a balanced plan must send
    half its mass across classes (ceiling 0.5); moving only half the mass need not."""
    import unbalanced_plans

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    labels_a, labels_b = np.array([0] * 6 + [1] * 2), np.array([0] * 2 + [1] * 6)
    za = centres[labels_a] + 0.1 * rng.normal(size=(8, 2))
    zb = centres[labels_b] + 0.1 * rng.normal(size=(8, 2))
    found = unbalanced_plans.plans(za, zb, alpha=0.5)
    balanced = unbalanced_plans.class_scores(found["balanced"], labels_a, labels_b, 2)
    partial = unbalanced_plans.class_scores(found["partial-0.5"], labels_a, labels_b, 2)
    assert balanced["class_mass"] == pytest.approx(0.5, abs=1e-6) and balanced["ceiling"] == 0.5
    assert partial["moved"] == pytest.approx(0.5, abs=1e-6) and partial["class_mass"] > 0.99
