"""Weights & Biases tracking: one W&B run per kdprune run, offline (sync later) without a login."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from kdprune.errors import ConfigError
from kdprune.models.build import model_name
from kdprune.results import flatten
from kdprune.run_record import VAL_ACC, VAL_LOSS

log = logging.getLogger("kdprune")

MODES = ("online", "offline", "disabled")
# wandb's own older spellings of the modes, accepted in WANDB_MODE
MODE_ALIASES = {"dryrun": "offline", "run": "online"}
EPOCH_METRICS = ("train_loss", "train_acc", VAL_LOSS, VAL_ACC, "lr", "seconds")


def has_credentials() -> bool:
    """Whether W&B can log in without asking: an API key or token in the environment, or a login
    stored by `wandb login` (netrc or wandb's settings file). Never contacts the server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    # wandb.login(prompt=False) would answer too, but it asks the server who the user is (seconds
    # offline); these are the same local look-ups without the network.
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib import wbauth

    try:
        settings = wandb_setup.singleton().settings
        return bool(wbauth.read_netrc_auth(host=settings.base_url) or settings.api_key)
    except Exception:  # an unreadable netrc or settings file means: no usable login
        return False


def resolve_mode(mode: str | None) -> Literal["online", "offline", "disabled"]:
    """The W&B mode to run in: `mode`, else $WANDB_MODE, else online only if a login is stored.

    Online without a login falls back to offline (with a warning) rather than prompting for a key.
    """
    requested = mode or os.environ.get("WANDB_MODE") or None
    if requested is not None:
        requested = MODE_ALIASES.get(requested, requested)
    if requested is not None and requested not in MODES:
        raise ConfigError(
            f"unknown W&B mode {requested!r}; choose from: {', '.join(MODES)} (or null: auto)"
        )
    if requested == "offline":
        return "offline"
    if requested == "disabled":
        return "disabled"
    if has_credentials():
        return "online"
    if requested == "online":
        log.warning("W&B: no API key (WANDB_API_KEY or `wandb login`); logging offline instead")
    return "offline"


def init_run(
    *, mode: str | None, dir: str | Path, init_timeout: float = 60.0, settings: Any = None, **kwargs
) -> Any | None:
    """`wandb.init` that never prompts and prints little; returns None (with a one-line warning)
    instead of raising when W&B cannot start. `kwargs` go to `wandb.init`."""
    import wandb

    try:
        resolved = resolve_mode(mode)
        Path(dir).mkdir(parents=True, exist_ok=True)
        # silent: kdprune logs its own one line; console off: app.log already holds the output
        options: dict[str, Any] = {"silent": True, "console": "off"}
        options["init_timeout"] = float(init_timeout)
        options.update(settings or {})
        return wandb.init(
            mode=resolved,
            dir=str(dir),
            reinit="finish_previous",  # a multirun runs its jobs one after another in one process
            settings=wandb.Settings(**options),
            **kwargs,
        )
    except ConfigError:
        raise
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [""])[0]
        log.warning("W&B tracking off for this run: %s: %s", type(err).__name__, first_line)
        return None


def describe_run(run: Any) -> None:
    """Log where a W&B run went, and how to upload it when it was offline."""
    if run is None or run.disabled:
        return
    if run.offline:
        log.info("W&B offline run in %s (upload: wandb sync %s)", run.dir, Path(run.dir).parent)
    else:
        log.info("W&B run: %s", run.url)


def run_tags(cfg: Mapping[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """Tags that let runs be filtered in the W&B UI: method, kd, order, model, dataset (+ extra)."""
    found = [
        cfg.get("prune_method", {}).get("name"),
        f"kd-{cfg.get('kd', {}).get('name')}",
        cfg.get("schedule", {}).get("name"),
        model_name(cfg["model"]) if cfg.get("model") else None,
        cfg.get("dataset", {}).get("name"),
        *extra,
    ]
    tags: list[str] = []
    for tag in found:
        if tag and str(tag) not in tags:
            tags.append(str(tag)[:64])  # W&B refuses tags longer than 64 characters
    return tags


def run_name(cfg: Mapping[str, Any]) -> str:
    """A readable run name: order, method@ratio, kd, seed."""
    pm = cfg.get("prune_method", {})
    return (
        f"{cfg.get('schedule', {}).get('name')} {pm.get('name')}@{pm.get('ratio')} "
        f"kd={cfg.get('kd', {}).get('name')} seed={cfg.get('seed')}"
    )


class WandbTracker:
    """`logger=wandb`: per-epoch history, the ledger as the run's summary, one W&B run per run.

    Without an API key or stored login it logs offline into `<run_dir>/wandb/` (upload later with
    `wandb sync`); when W&B cannot start, the run goes on untracked after a one-line warning.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        run_dir: str,
        project: str = "kdprune",
        entity: str | None = None,
        mode: str | None = None,
        tags: Sequence[str] = (),
        init_timeout: float = 60.0,
        settings: Mapping[str, Any] | None = None,
    ):
        self._step = 0
        self._stages: set[str] = set()
        self._run = init_run(
            mode=mode,
            dir=run_dir,
            init_timeout=init_timeout,
            settings=settings,
            project=project,
            entity=entity,
            group=cfg.get("sweep_name"),
            job_type=cfg.get("schedule", {}).get("name"),
            tags=run_tags(cfg, tags),
            name=run_name(cfg),
            config=flatten(cfg),
        )
        if self._run is not None:
            self._run.define_metric("global_step")
            describe_run(self._run)

    @property
    def run(self) -> Any | None:
        """The W&B run, or None when tracking is off."""
        return self._run

    def log(self, record: dict[str, Any]) -> None:
        """Log one epoch record: `<stage>/<metric>` against the stage's epoch, and the plain metric
        against a step counted across all stages (the whole run on one axis)."""
        if self._run is None:
            return
        stage = str(record.get("stage", "train"))
        if stage not in self._stages:
            self._stages.add(stage)
            self._run.define_metric(f"{stage}/epoch")
            self._run.define_metric(f"{stage}/*", step_metric=f"{stage}/epoch")
        values = {k: record[k] for k in EPOCH_METRICS if record.get(k) is not None}
        row = {f"{stage}/{k}": v for k, v in values.items()}
        row[f"{stage}/epoch"] = record.get("epoch", 0)
        row.update(values)
        row["global_step"] = self._step
        self._run.log(row, step=self._step)
        self._step += 1

    def summary(self, metrics: dict[str, Any]) -> None:
        """Put the run's ledger (metrics.json without history) into the W&B summary."""
        if self._run is not None:
            self._run.summary.update(dict(metrics))

    def finish(self, failed: bool = False) -> None:
        """End the W&B run (marked failed when the kdprune run failed); safe to call twice."""
        run, self._run = self._run, None
        if run is not None:
            run.finish(exit_code=1 if failed else 0)
