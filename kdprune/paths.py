"""Where kdprune's configs live, and which options each config group offers (a leaf module).

A built wheel carries `conf/` (with `sweep/`, the top-level `sweeps/`) inside the package as
`kdprune/conf`; a source checkout or an editable install reads the top-level `conf/` directly.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"


def config_groups() -> list[str]:
    """The config groups: every folder of `conf/` (`sweep` among them)."""
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def group_options(group: str) -> list[str]:
    """The options of a config group: the names of its YAML files."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def option_file(group: str, option: str) -> Path | None:
    """The YAML file of `group=option`, or None when there is no such option."""
    return CONF_DIR / group / f"{option}.yaml" if option in group_options(group) else None


def sqlite_file(storage: object) -> Path | None:
    """The database file of a `sqlite:///path.db` storage URL (relative or absolute), else None."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///")).expanduser()
    return None


def journal_file(storage: object) -> Path | None:
    """The log file of a `journal:///path.log` storage URL (Optuna's journal file storage; relative
    or absolute, as with sqlite), else None."""
    if isinstance(storage, str) and storage.startswith("journal:///"):
        return Path(storage.removeprefix("journal:///")).expanduser()
    return None
