"""The OTM ServerApp: builds the strategy from the run config and runs it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from otm_fed.config import config_from_run_config
from otm_fed.results import RunRecorder, format_summary, is_finished, new_run_dir, read_summary
from otm_fed.scenario import check_fits, fold_test_targets, scenario_dataset, site_counts
from server.strategy import OTMStrategy, strategy_class

app = ServerApp()


def build_strategy(config: Mapping[str, Any], recorder: RunRecorder | None) -> OTMStrategy:
    """The configured strategy, sized from the config or, where it is silent, from the dataset
    (which the server only reads in simulation, for sizes, the fused score's labels (in
    supervised mode the test fold's targets, for late fusion) and the alignment diagnostic, both
    only with one site per modality: sites hold different samples; the fused score also only
    where every modality holds every sample)."""
    n_modalities, n_clusters, labels, samples = config["num-modalities"], config["n-clusters"], None, None
    if not (n_modalities and n_clusters) or config["fused-eval"]:
        dataset = scenario_dataset(config)
        check_fits(config, dataset)
        n_modalities = n_modalities or dataset.n_views
        n_clusters = n_clusters or dataset.n_classes
        if config["fused-eval"] and max(site_counts(config, n_modalities)) == 1:  # sites hold different samples
            samples = dataset
            if dataset.same_samples and config["overlap"] == 1:
                labels = dataset.labels if config["task"] == "clustering" else fold_test_targets(config)
    return strategy_class(config["strategy"])(config, n_modalities, n_clusters, recorder=recorder,
                                          fused_labels=labels, samples=samples)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """One run into ``out-dir`` (default a new folder under ``runs/``). The data are checked
    against the config before the folder is made; resuming a run that has done all its rounds
    changes nothing. Ends with the final table."""
    config = config_from_run_config(context.run_config)
    log = logging.getLogger("otm_fed.server")
    if config["resume"] and config["out-dir"] and is_finished(config["out-dir"], config["rounds"]):
        log.warning("%s already finished its %d rounds; nothing to do", config["out-dir"], config["rounds"])
        return
    strategy = build_strategy(config, None)  # reads and checks the data first
    run_dir = Path(config["out-dir"]) if config["out-dir"] else new_run_dir(config)
    config["out-dir"] = strategy.config["out-dir"] = str(run_dir.resolve())
    strategy.recorder = RunRecorder(run_dir, config)
    log.info("run folder %s", run_dir)
    strategy.start(grid)
    summary = read_summary(run_dir)
    if summary is not None and summary["final"]:
        print(f"{format_summary(summary)}\nrun folder: {run_dir.resolve()} (its plots: otm-fed plot {run_dir.resolve()})",
              flush=True)
