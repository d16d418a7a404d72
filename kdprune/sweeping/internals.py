"""Every use of Hydra's, hydra-optuna-sweeper's and Optuna's private API, in one place.

kdprune's sweeper is built on parts these libraries do not publish. Each item below names what
it relies on and in which pinned version (pyproject.toml: `hydra-core==1.4.0rc3`,
`hydra-optuna-sweeper==1.4.0rc3`, `optuna>=5,<6`, read on 5.1.0), so an upgrade is this file's
work: check each note against the new version. Nothing else in kdprune touches a private name of
these libraries (nor of OmegaConf); `tests/test_private_access.py` fails where something does.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

# ---- Hydra (hydra-core 1.4.0rc3) ----------------------------------------------------------------

# The `_target_` of Hydra's own grid sweeper and in-process launcher: classes in the private
# package `hydra._internal.core_plugins`, which their `hydra/sweeper=basic` and
# `hydra/launcher=basic` configs name.
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# The launchers that run a worker's jobs on the worker's own machine (in its process, or in
# processes it starts): Hydra's basic one, joblib's and submitit's local executor (public names).
LOCAL_LAUNCHERS = (
    BASIC_LAUNCHER,
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
)


def job_error(ret: JobReturn) -> Any:
    """What a failed job raised, without raising it: `JobReturn._return_value` (the public
    `return_value` property re-raises a failed job's exception)."""
    return ret._return_value


# ---- hydra-optuna-sweeper (1.4.0rc3) ------------------------------------------------------------
# `OptunaSweeperImpl` lives in the private module `hydra_plugins.hydra_optuna_sweeper._impl`;
# kdprune's `SharedStudySweeper` subclasses it for its constructor, `setup` (launcher, config)
# and attributes (n_trials, storage, study_name, n_jobs, max_failure_rate, config, launcher), and
# reuses the private methods below for the search space, as Hydra's own loop does.


def search_space(
    sweeper: OptunaSweeperImpl, arguments: list[str]
) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """(distributions, fixed params, fixed overrides) of the sweeper's `params` plus the command
    line's `arguments`: `_process_searchspace_config`, `_parse_sweeper_params_config` and the
    module function `create_params_from_overrides`."""
    sweeper._process_searchspace_config()
    return create_params_from_overrides([*sweeper._parse_sweeper_params_config(), *arguments])


def grid_choices(distribution: BaseDistribution) -> list:
    """The values a grid sampler visits for one distribution: the static method
    `OptunaSweeperImpl._to_grid_sampler_choices`."""
    return OptunaSweeperImpl._to_grid_sampler_choices(distribution)


def directions(sweeper: OptunaSweeperImpl) -> list[StudyDirection]:
    """The study's directions from the sweeper's `direction` option: `_get_directions` (names,
    which Optuna would check and convert as below)."""
    names = sweeper._get_directions()
    known = {"minimize": StudyDirection.MINIMIZE, "maximize": StudyDirection.MAXIMIZE}
    if any(name not in known for name in names):
        raise ValueError(f"`directions` must be a list of `minimize` or `maximize`, got {names}.")
    return [known[name] for name in names]


def trial_overrides(
    sweeper: OptunaSweeperImpl,
    trial: optuna.Trial,
    space: dict[str, BaseDistribution],
    fixed_params: dict[str, Any],
    fixed_overrides: list[str],
) -> list[str]:
    """Suggest the trial's params and return its job's overrides: `_configure_trials` (which
    also runs `custom_search_space` and sets fixed params as user attrs)."""
    return list(sweeper._configure_trials([trial], space, fixed_params, fixed_overrides)[0])


# ---- Optuna (5.1) -------------------------------------------------------------------------------


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a study object talks to: `Study._storage` (Optuna wraps an RDB storage in its
    `_CachedStorage`; this is that wrapper)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage: `Study._study_id`."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in its storage (unique across studies, unlike `number`):
    `Trial._trial_id` / `FrozenTrial._trial_id`."""
    return trial._trial_id


def storage_backend(storage: BaseStorage) -> BaseStorage:
    """The storage under Optuna's cache, or `storage` itself: `_CachedStorage._backend`."""
    return getattr(storage, "_backend", storage)


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether the storage records heartbeats: `is_heartbeat_enabled`, from the private module
    `optuna.storages._heartbeat`."""
    return is_heartbeat_enabled(storage)


def stale_trial_ids(storage: BaseStorage, study_id: int) -> list[int]:
    """The running trials of a study whose heartbeat is older than the storage's grace period:
    `BaseHeartbeat._get_stale_trial_ids` (only `optimize()` calls it in Optuna)."""
    assert isinstance(storage, BaseHeartbeat)
    return storage._get_stale_trial_ids(study_id)


class HeartbeatStorage(BaseHeartbeat):
    """Optuna's heartbeat interface for a storage of kdprune's: `BaseHeartbeat` (private module
    `optuna.storages._heartbeat`), whose abstract stale-trial query `_get_stale_trial_ids` is
    answered by the public `stale_trials`. A subclass also implements `record_heartbeat`,
    `get_heartbeat_interval` and `get_heartbeat_stale_trial_callback`."""

    @abc.abstractmethod
    def stale_trials(self, study_id: int) -> Sequence[int]:
        """The ids of the study's running trials that stopped beating."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return list(self.stale_trials(study_id))
