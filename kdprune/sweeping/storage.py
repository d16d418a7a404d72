"""Where a study lives: one URL for every worker, opened with heartbeats.

- `sqlite:///path.db`, `postgresql://user@host/db`, `mysql+pymysql://...`: Optuna's RDB storage
  (SQLAlchemy). A worker beats for its running trial every `heartbeat_interval` seconds; a trial
  whose last beat (by the database's clock) is older than `grace_period` is stale.
- `journal:///path.log`: Optuna's journal file storage, for users without a database (one file on
  a shared file system). It has no heartbeat of its own; `HeartbeatJournalStorage` adds the same
  mechanism, with beats written into the journal.

`check_storage` says in one line what is wrong with a URL (no driver installed, a scheme Optuna
cannot open) before any work.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from kdprune.errors import ConfigError, FaultError, one_line
from kdprune.paths import journal_file, sqlite_file
from kdprune.sweeping import internals

HEARTBEAT_ATTR = "kdprune:heartbeat"  # journal storage: time.time() of the trial's last beat
RACE_WORDS = ("already exists", "duplicate")
SCHEMA_ATTEMPTS = 10  # workers creating an empty database's tables at once: tries each
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}  # the servers' own defaults, for messages
DRIVER_HINT = "pip install 'psycopg[binary]' (or: pip install -e '.[postgres]')"


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    if "@" not in url or "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: leave it as it is
        return url


def check_storage(url: Any) -> None:
    """ConfigError (one line) unless `url` is a storage this machine can open."""
    if url is None or journal_file(url) is not None:
        return
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"hydra.sweeper.storage must be a URL (sqlite:///study.db, postgresql://user@host/db "
            f"or journal:///study.log), got {url!r}"
        )
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise ConfigError(f"cannot use storage {redacted(url)}: {err}") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        driver = getattr(dialect, "driver", "?")
        hint = f"install {driver}" + (
            f", or use postgresql:// and {DRIVER_HINT}" if dialect.name == "postgresql" else ""
        )
        hint = DRIVER_HINT if driver == "psycopg" else hint
        raise ConfigError(
            f"storage {redacted(url)} needs the {dialect.name} driver {driver!r}, which is not "
            f"installed ({err.name or err}): {hint}"
        ) from None


class BeatWatch:
    """Which running trials stopped beating, judged on this process's own clock.

    A trial's *beat token* changes at every heartbeat (or is None before its first one). A token
    this process has seen unchanged for `grace` seconds is stale, so no two machines' clocks are
    ever compared; a worker that starts watching needs `grace` seconds to call any trial stale.
    """

    def __init__(self, grace: float):
        self.grace = grace
        self.seen: dict[int, tuple[Any, float]] = {}

    def stale(self, tokens: dict[int, Any]) -> list[int]:
        """The trial ids whose token has not changed for `grace` seconds (tokens: id -> token)."""
        now = time.monotonic()
        seen = {}
        for trial_id, token in tokens.items():
            before = self.seen.get(trial_id)
            since = before[1] if before is not None and before[0] == token else now
            seen[trial_id] = (token, since)
        self.seen = seen
        return sorted(i for i, (_, since) in seen.items() if now - since > self.grace)


def grace_seconds(heartbeat_interval: int | None, grace_period: int | None) -> float:
    """Optuna's rule: the grace period, or twice the heartbeat interval when it is not set."""
    return float(grace_period or 2 * (heartbeat_interval or 0))


class HeartbeatJournalStorage(JournalStorage, internals.HeartbeatStorage):
    """Optuna's journal file storage plus heartbeats kept in the journal itself: each beat
    writes the trial's system attr `kdprune:heartbeat`, and a trial is stale when this process has
    seen that value unchanged for the grace period."""

    def __init__(self, path: str, heartbeat_interval: int | None, grace_period: int | None):
        super().__init__(JournalFileBackend(path))
        self.heartbeat_interval = heartbeat_interval
        self.watch = BeatWatch(grace_seconds(heartbeat_interval, grace_period))

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def stale_trials(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return self.watch.stale(
            {internals.trial_id(t): t.system_attrs.get(HEARTBEAT_ATTR) for t in running}
        )

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> None:
        return None


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> BaseStorage:
    """The storage behind `url`, with heartbeats when `heartbeat_interval` is set."""
    check_storage(url)
    journal = journal_file(url)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(str(journal), heartbeat_interval, grace_period)
    db = sqlite_file(url)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # SQLAlchemy will not
    rdb = _rdb_storage(url, heartbeat_interval, grace_period, pool_pre_ping=db is None)
    return optuna.storages.get_storage(rdb)


def _rdb_storage(
    url: str, heartbeat_interval: int | None, grace_period: int | None, pool_pre_ping: bool
) -> RDBStorage:
    """Optuna's RDBStorage. Workers that start together on an empty database all create its
    tables and stamp their version; all but one lose that race (a duplicate table, type or
    version row: IntegrityError, or "already exists") and simply try again, when the tables are
    there. Any other error (a server that cannot be reached, ...) is raised at once."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    engine_kwargs={"pool_pre_ping": True} if pool_pre_ping else None,
                )
        except (IntegrityError, ProgrammingError, OperationalError) as err:
            message = str(err).lower()
            lost_race = isinstance(err, IntegrityError) or any(w in message for w in RACE_WORDS)
            if not lost_race or attempt == SCHEMA_ATTEMPTS - 1:
                raise unreachable(url, err) from None
    raise AssertionError("unreachable")


def unreachable(url: str, err: Exception) -> FaultError:
    """One line for a database that cannot be opened: where (host and port, never a password)
    and the driver's first line of why (`Connection refused`, an authentication failure, ...)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    port = parsed.port or DEFAULT_PORTS.get(parsed.get_backend_name()) or "?"
    place = f"{parsed.host}:{port}" if parsed.host else (parsed.database or "?")
    cause = getattr(err, "orig", None) or err
    reason = one_line(cause) if str(cause).strip() else type(cause).__name__
    return FaultError(f"cannot open the study's database {redacted(url)} at {place}: {reason}")


def close_storage(storage: BaseStorage) -> None:
    """Give a storage's database connections back (a job opens one per trial)."""
    backend = internals.storage_backend(storage)
    if isinstance(backend, RDBStorage):
        backend.remove_session()
        backend.engine.dispose()
