"""Resume on Flower's deployment engine: kill the ServerApp process during a run, run again with
``resume=true`` into the same run folder, and compare with an uninterrupted run.

    python benchmarks/deployment_resume.py [--rounds 3] [--kill-after 1] [--out DIR]

One LocalFederation (SuperLink + 3 SuperNodes for prokaryotic, TLS, node auth): run A is killed
(SIGKILL to the ServerApp process) once round ``--kill-after`` is recorded; run B resumes it; the
SuperNodes restore their agents from their own checkpoints. Run C, uninterrupted, goes to a
second folder. Prints both runs' per-round losses and final scores. Everything is written into a
new folder ``runs/deploy-resume-YYYYmmdd-HHMMSS-microseconds`` (or an empty ``--out``); a run that
fails stops the benchmark, saying why.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path

from otm_fed.data import DATASET_FILES, resolve_data_dir
from otm_fed.results import read_rounds, read_summary
from launcher.deploy import LocalFederation, RunFailed, add_work_folder_option, flower_bin, open_work_folder, toml_value

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each run")
    parser.add_argument("--kill-after", type=int, default=1, help="kill run A's ServerApp once this round is recorded")
    add_work_folder_option(parser, "deploy-resume")
    args = parser.parse_args(argv)
    work = open_work_folder(args.out, "deploy-resume", "deployment_resume")
    config = {"scenario": "prokaryotic", "rounds": args.rounds, "eval-every": args.rounds, "num-modalities": 3,
              "n-clusters": 4, "fused-eval": False}
    with LocalFederation(work, resolve_data_dir() / DATASET_FILES["prokaryotic"], n_nodes=3) as federation:
        resumed = work / "resumed"
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in {**config, "out-dir": str(resumed)}.items())
        run_a = subprocess.Popen([flower_bin("flwr"), "run", str(ROOT), federation.name, "--run-config", overrides, "--stream"],
                                 env=federation.env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics = resumed / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count("\n") >= args.kill_after):
            if run_a.poll() is not None:
                raise SystemExit(f"deployment_resume: run A ended (flwr run exit code {run_a.returncode}) before "
                                 f"round {args.kill_after}; see {work / 'superlink.log'}")
            time.sleep(0.5)
        killed = federation.serverapp_pids()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        run_a.kill()
        run_a.wait()
        print(f"killed ServerApp {killed} after round {args.kill_after}; rows on disk: "
              f"{[row['round'] for row in read_rounds(resumed)]}", flush=True)
        try:
            federation.run(ROOT, {**config, "out-dir": str(resumed), "resume": True}, timeout=1800)
            federation.run(ROOT, {**config, "out-dir": str(work / "whole")}, timeout=1800)
        except RunFailed as error:
            raise SystemExit(f"deployment_resume: {error}") from None
    for name in ("resumed", "whole"):
        rows = read_rounds(work / name)
        final = read_summary(work / name)["final"]
        totals = [round(sum(l["total"] for l in row["losses"].values()), 6) for row in rows]
        print(f"{name}: rounds {[row['round'] for row in rows]}, summed losses {totals}, purity {final['purity']:.6f}, "
              f"acc {final['acc']:.6f}, nmi {final['nmi']:.6f}")


if __name__ == "__main__":
    main()
