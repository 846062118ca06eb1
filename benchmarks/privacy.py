"""Effect of the latent privacy option (per-code clipping + Gaussian noise) on final purity.

    python benchmarks/privacy.py [--scenario synthetic] [--seeds 0,1,2] [--clip 4.0] [--noise 0,0.25,1.0]

Runs the in-process engine for each setting and seed and prints the final round's mean purity
(mean ± std over seeds) and fused purity; the first row is the option off.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from otm_fed.config import resolve_config
from otm_fed.scenario import scenario_dataset
from launcher.inprocess import run_inprocess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="synthetic")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--clip", type=float, default=4.0)
    parser.add_argument("--noise", default="0,0.25,1.0")
    args = parser.parse_args()
    settings = [(0.0, 0.0)] + [(args.clip, float(noise)) for noise in args.noise.split(",")]
    print("| latent-clip | latent-noise-multiplier | purity (mean ± std) | fused purity (mean ± std) |\n|---|---|---|---|")
    for clip, noise in settings:
        scores = []
        for seed in args.seeds.split(","):
            config = resolve_config(args.scenario, {"seed": seed, "latent-clip": str(clip),
                                                    "latent-noise-multiplier": str(noise)})
            with tempfile.TemporaryDirectory() as run_dir:
                run_inprocess(config, scenario_dataset(config).n_views, run_dir)
                final = json.loads((Path(run_dir) / "summary.json").read_text())["final"]
            scores.append((final["purity"], final.get("fused_purity", np.nan)))
        purity, fused = np.array(scores).T
        print(f"| {clip:g} | {noise:g} | {purity.mean():.4f} ± {purity.std():.4f} | {fused.mean():.4f} ± {fused.std():.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
