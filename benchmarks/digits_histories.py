"""Per-epoch histories of real digits runs, one per order and configuration, for the pruner replay
test (`tests/test_pruner_fairness.py`): the Optuna sweep's search space (conf/sweep/optuna.yaml:
prune ratio, KD temperature and alpha, fine-tuning epochs, the order) sampled with a fixed seed,
each configuration run in all three orders from the same cached teacher.

    PYTHONPATH=. python -m benchmarks.digits_histories [--configs 6] [--out tests/data/...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from benchmarks.machine import commit, cpu_model
from benchmarks.paths import ROOT
from kdprune import paths
from kdprune.app import run
from kdprune.results import write_json
from kdprune.schedules.names import ORDER_NAMES

OUT = ROOT / "tests" / "data" / "digits_histories.json"
# The sweep's own settings (conf/sweep/optuna.yaml) on digits, small and on the CPU.
COMMON = [
    "dataset=digits", "model=lenet5", "device=cpu", "teacher.epochs=3", "trainer.batch_size=64",
    "trainer.progress=false", "trainer.num_workers=0", "trainer.threads=1", "measure.repeats=1",
    "measure.warmup=0", "logger=none", "student_init=teacher", "trainer.select_epoch=last",
    "budget.student_epochs=3",
]  # fmt: skip
KEPT = ("stage", "epoch", "val_acc", "after_cut")


def sample(rng: random.Random) -> dict[str, Any]:
    """One configuration from the sweep's search space (all but the order)."""
    return {
        "prune_method.ratio": round(rng.uniform(0.2, 0.8), 3),
        "kd.temperature": round(10 ** rng.uniform(0.0, 1.0), 3),
        "kd.alpha": round(rng.uniform(0.0, 1.0), 3),
        "budget.finetune_epochs": rng.randint(1, 2),
    }


def one_run(params: dict[str, Any], order: str, folder: Path) -> dict[str, Any]:
    """Run one configuration in one order; its history, trimmed to what a pruner sees."""
    overrides = [*COMMON, f"paths.cache_dir={folder}/cache", f"schedule={order}"]
    overrides += [f"{k}={v}" for k, v in params.items()]
    with initialize_config_dir(config_dir=str(paths.CONF_DIR), version_base=None):
        cfg = compose("config", overrides=overrides)
    metrics = run(cfg, folder / f"run{len(list(folder.glob('run*')))}")
    history = [{k: h[k] for k in KEPT} for h in metrics["history"]]
    return {"order": order, "params": params, "val_acc": metrics["val_acc"], "history": history}


def main() -> None:
    """Run `--configs` sampled configurations in every order; write the histories as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.configs):
            params = sample(rng)
            runs += [one_run(params, order, Path(tmp)) for order in ORDER_NAMES]
    write_json(args.out, {
        "what": "digits histories, lenet5, student_init=teacher, 3 student epochs per run",
        "overrides": COMMON, "seed": args.seed, "commit": commit(), "cpu": cpu_model(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "runs": runs,
    })  # fmt: skip
    print(f"{len(runs)} histories: {args.out}")


if __name__ == "__main__":
    main()
