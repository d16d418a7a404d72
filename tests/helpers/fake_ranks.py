"""A stand-in for `python -m kdprune.launch --nproc N <overrides>`, for the job's side of a
sweep of several-process trials (`kdprune.ranks_job`) without starting any rank or training.

Run as `python fake_ranks.py [--fail-above X] --nproc N <overrides>`: it composes the overrides
once per rank, as each rank of the real job does (`kdprune.launch.start_rank`), and writes rank
0's metrics.json into the run folder they name, with every rank's config hash and `val_acc` set
to the job's `kd.alpha` (so a test can tell which job's result a trial got). With --fail-above,
a job whose kd.alpha exceeds X fails as a dead rank's launcher does: one line, exit code 3, no
metrics.json. Real ranks: tests/test_ddp_trials.py's study of two-process trials.
"""

from __future__ import annotations

import argparse
import sys

from fake_runs import fake_metrics  # run as a script: its own folder is on sys.path
from omegaconf import OmegaConf, open_dict

from kdprune.instantiation import compose_run
from kdprune.results import config_fingerprint, config_sha256, write_metrics

DIED = "kdprune: error: rank 1 of {n} exited with code 3; the job stopped (a fake rank)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("--fail-above", type=float, default=None)
    args, overrides = parser.parse_known_args(argv)
    hashes, config, run_dir = [], {}, ""
    for rank in range(args.nproc):
        cfg = compose_run(overrides, with_hydra=True)
        run_dir = str(cfg.hydra.run.dir)
        with open_dict(cfg):
            del cfg["hydra"]  # as a rank's task gets its config: without Hydra's node
        config = OmegaConf.to_container(cfg, resolve=True)
        hashes.append(config_sha256(config))
        print(f"fake rank {rank} of {args.nproc}: {run_dir}", flush=True)
    alpha = float(config["kd"]["alpha"])
    if args.fail_above is not None and alpha > args.fail_above:
        print(DIED.format(n=args.nproc), file=sys.stderr)
        return 3
    # A whole run record (write_metrics refuses less), the job's numbers in it.
    metrics = fake_metrics("joint", 0.5, int(config["seed"]), alpha, alpha, world_size=args.nproc,
                           backend="gloo", config=config, config_sha256_by_rank=hashes,
                           config_fingerprint=config_fingerprint(config))  # fmt: skip
    write_metrics(run_dir, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
