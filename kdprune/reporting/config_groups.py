"""Which runs are one configuration, which are compared, and what tells configurations apart.

Every key comes from `kdprune.results.config_fingerprint` over the run's resolved config
(metrics.json `config`): equal fingerprint = same configuration, seeds left out. Runs written
before metrics.json held `config` get a stand-in config from the scalar keys they have
(LEGACY_KEYS), and the report says that their configurations may be pooled.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

from kdprune.errors import ConfigError
from kdprune.results import config_fingerprint, configuration, flatten
from kdprune.run_record import CONFIG, CONFIG_FINGERPRINT, DATASET, MODEL, ORDER

# Left out of the fingerprint that pairs runs across the orders, KD on / off and the teacher: one
# compression level holds every order × KD × teacher arm (the blocked model's arms).
PAIRING_LEAVE_OUT = ("schedule", "kd", "teacher")
# What a run without KD does not use of its teacher: the architecture and the file (a `trained`
# start is the dense student trained by the teacher's recipe, so the recipe stays).
TEACHER_ONLY = ("teacher.model", "teacher.checkpoint")
# What a report compares within a compression level: `orders` (the orders and KD on / off, the
# default) or a config group, e.g. `prune_method`: configurations that differ only in it.
ORDERS_AND_KD = "orders"
# A compared group's keys that stay in the pairing key: the compression target.
KEPT_WHEN_COMPARED = {"prune_method": ("ratio", "unit")}
# The pruning target: a label on the plots, left out of the key that joins points into a line.
TARGET_KEYS = ("prune_method.ratio", "prune_method.pruner.ratio")
NO_KD = "none"
# What a run without `config` is told apart by (the report's grouping before configs were kept).
LEGACY_KEYS = ("model", "dataset", "order", "kd", "method", "unit", "target_ratio")
_MISSING = "<absent>"
# Labels name the order first, then KD, then whatever else differs.
NAMES_FIRST = ("schedule.name", "kd.name")


def legacy_config(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A stand-in config from a run's scalar keys, shaped like the real one (same leave-outs)."""
    return {
        "model": {"name": metrics.get(MODEL)},
        "dataset": {"name": metrics.get(DATASET)},
        "schedule": {"name": metrics.get(ORDER)},
        "kd": {"name": metrics.get("kd")},
        "prune_method": {
            "name": metrics.get("method"),
            "unit": metrics.get("unit"),
            "ratio": metrics.get("target_ratio"),
        },
    }


def paired_config(config: Mapping[str, Any], compare: str = ORDERS_AND_KD) -> dict[str, Any]:
    """The configuration as pairing sees it: without the orders and KD, or without the
    compared group (but its target, which sets the compression level)."""
    if compare == ORDERS_AND_KD:
        return without(config, PAIRING_LEAVE_OUT)
    group = config.get(compare)
    keep = KEPT_WHEN_COMPARED.get(compare, ())
    if isinstance(group, Mapping) and group.get("unit") == "latency":
        keep = (*keep, "latency")  # cuts to one latency target compare: the same target
    kept = {k: v for k, v in group.items() if k in keep} if isinstance(group, Mapping) else {}
    return {**configuration(dict(config)), compare: kept}


def pairing_key(config: Mapping[str, Any], compare: str = ORDERS_AND_KD) -> str:
    """Equal for the runs a report compares with each other (see `paired_config`)."""
    return config_fingerprint(paired_config(config, compare))


def paired_by(runs: Any, compare: str) -> Any:
    """The ledger with `pairing_key` for what the report compares (ConfigError if no run's
    config has the `compare` group)."""
    if compare == ORDERS_AND_KD:
        return runs
    configs = [json.loads(text) for text in runs["config_json"]]
    if not any(compare in config for config in configs):
        raise ConfigError(f"--compare {compare}: no run's config has a `{compare}` group.")
    out = runs.copy()
    out["pairing_key"] = [pairing_key(config, compare) for config in configs]
    return out


def uses_teacher(config: Mapping[str, Any]) -> bool:
    """Whether a run's results depend on its teacher: KD, or a start from the teacher."""
    kd = config.get("kd")
    name = kd.get("name") if isinstance(kd, Mapping) else None
    return name != NO_KD or config.get("student_init") == "teacher"


def effective_config(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The config as identity sees it: `device` as resolved (metrics.json `device`, not `auto`),
    and without what the run does not use (the teacher of a run without KD: its kd=none runs
    under two teachers are one configuration, not duplicated evidence)."""
    config = dict(config)
    if isinstance(metrics.get("device"), str) and "device" in config:
        config["device"] = metrics["device"]
    if uses_teacher(config):
        return config
    if config.get("student_init") in ("scratch", "checkpoint"):
        return without(config, ("teacher",))
    return without(config, TEACHER_ONLY)


def _sub_key(config: Mapping[str, Any], group: str) -> str:
    """The fingerprint of one config group (e.g. the schedule) alone."""
    return config_fingerprint({group: config.get(group)})


def run_identity(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A run's identity columns: configuration, pairing, series, schedule and KD fingerprints,
    the keys of its contrasts (equal `order_key`: only the order differs; `kd_pair_key`: only
    KD and the teacher; `teacher_key`: only the teacher), where they came from (`config`, a
    `stored` fingerprint, or the scalar `legacy` keys) and the configuration as JSON."""
    stored = metrics.get(CONFIG)
    source = "config" if isinstance(stored, dict) else "legacy"
    if isinstance(stored, dict):
        config = effective_config(stored, metrics)
    else:
        config = legacy_config(metrics)
    kept = configuration(config)
    fingerprint = config_fingerprint(config)
    if source == "legacy" and isinstance(metrics.get(CONFIG_FINGERPRINT), str):
        fingerprint, source = metrics[CONFIG_FINGERPRINT], "stored"  # pairing still legacy
    return {
        CONFIG_FINGERPRINT: fingerprint,
        "pairing_key": pairing_key(config),
        "series_key": config_fingerprint(config, TARGET_KEYS),
        "schedule_key": _sub_key(kept, "schedule"),
        "kd_key": _sub_key(kept, "kd"),
        "order_key": config_fingerprint(config, ("schedule",)),
        "kd_pair_key": config_fingerprint(config, ("kd", "teacher")),
        "teacher_key": config_fingerprint(config, ("teacher",)),
        "fingerprint_from": source,
        "config_json": json.dumps(kept, sort_keys=True, default=str),
    }


def _is_plumbing(key: str) -> bool:
    """Keys that say how an object is built, not what it is (`_target_`, `_partial_`)."""
    return any(part.startswith("_") and part.endswith("_") for part in key.split("."))


def distinguishing_keys(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The dotted keys whose values differ between the configurations.

    Inside a named group (`kd.name`, `schedule.name`, ...) a key counts only when it differs
    between configurations of the same name: `kd.temperature` is not news when one side is
    `kd=none`, the name says it. Keys that always agree name one difference: the shallowest
    stays. Names first (schedule, kd), then the rest sorted.
    """
    flats = [flatten(c) for c in configs]
    named = {k[: -len(".name")] for f in flats for k in f if k.endswith(".name")}
    out = []
    for key in sorted({k for f in flats for k in f}):
        if _is_plumbing(key):
            continue
        if _unused_elsewhere(key, flats):
            continue
        scope = _name_scope(key, named)
        seen: dict[Any, set[str]] = defaultdict(set)
        for f in flats:
            bucket = f.get(scope, _MISSING) if scope else None
            seen[json.dumps(bucket, default=str)].add(json.dumps(f.get(key, _MISSING), default=str))
        if any(len(values) > 1 for values in seen.values()):
            out.append(key)
    out = _without_copies(out, flats)
    first = [k for k in NAMES_FIRST if k in out]
    return first + [k for k in out if k not in first]


def _unused_elsewhere(key: str, flats: list[dict[str, Any]]) -> bool:
    """One value wherever the key (a group below it, or a null group above it) is present,
    absent from the others:
    not news (the teacher's architecture and file, which a run without KD does not keep)."""
    values, absent = set(), False
    for flat in flats:
        near = {
            k: v
            for k, v in flat.items()
            if k == key or k.startswith(key + ".") or key.startswith(k + ".")  # a null group
        }
        if near:
            values.add(json.dumps(near, sort_keys=True, default=str))
        else:
            absent = True
    return absent and len(values) < 2


def _name_scope(key: str, named: set[str]) -> str | None:
    """The `.name` key of the deepest named node holding `key` (`teacher.model.name` for
    `teacher.model.hidden`), or None: within one name, a key is not news."""
    owners = [node for node in named if key.startswith(node + ".") and key != node + ".name"]
    return max(owners, key=len) + ".name" if owners else None


def _without_copies(keys: list[str], flats: list[dict[str, Any]]) -> list[str]:
    """One key per set of keys that always hold the same values (an interpolated copy such as
    `kd.objective.temperature` of `kd.temperature`): the shallowest, then the first by name."""
    kept: dict[tuple[str, ...], str] = {}
    for key in sorted(keys, key=lambda k: (k.count("."), k)):
        signature = tuple(json.dumps(f.get(key, _MISSING), default=str) for f in flats)
        kept.setdefault(signature, key)
    return sorted(kept.values())


# What a null means for the keys where it means something (conf/teacher/same.yaml, a
# prune_method without a ratio file).
NULL_MEANS = {"teacher.model": "the student's", "prune_method.layer_ratios": "uniform"}


def _show(value: Any, key: str = "") -> str:
    if value is None and key in NULL_MEANS:
        return NULL_MEANS[key]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and "/" in value and len(value) > 40:  # a file: name its end
        return "…/" + "/".join(PurePath(value).parts[-2:])
    return str(value)


def describe(config: Mapping[str, Any], keys: Iterable[str]) -> str:
    """A configuration in the words of `keys`: `joint, kd=hinton, kd.temperature=2`."""
    flat = flatten(config)
    parts = []
    for key in keys:
        value = flat.get(key, _MISSING)
        if value is _MISSING:  # e.g. kd.temperature of kd=none: its name already says so
            continue
        if key == "schedule.name":
            parts.append(_show(value))
        elif key.endswith(".name"):  # kd=hinton, teacher.model=cnn5
            parts.append(f"{key[: -len('.name')]}={_show(value)}")
        else:
            parts.append(f"{key}={_show(value, key)}")
    return ", ".join(parts)


def labels(configs: Mapping[str, Mapping[str, Any]], always: Iterable[str] = ()) -> dict[str, str]:
    """A short, unique label per configuration (keyed by fingerprint): what sets it apart from
    the others, plus the `always` keys (e.g. the order) even where they do not vary."""
    keys = distinguishing_keys(configs.values())
    keys = [k for k in always if k not in keys] + keys
    keys.sort(key=lambda k: NAMES_FIRST.index(k) if k in NAMES_FIRST else len(NAMES_FIRST))
    out = {fp: describe(c, keys) or "all runs" for fp, c in configs.items()}
    counts: dict[str, int] = defaultdict(int)
    for label in out.values():
        counts[label] += 1
    return {fp: f"{lab} [{fp[:6]}]" if counts[lab] > 1 else lab for fp, lab in out.items()}


def configs_of(runs: Any, key: str = CONFIG_FINGERPRINT) -> dict[str, dict[str, Any]]:
    """One configuration (from `config_json`) per distinct value of `key` in the ledger."""
    first = runs.drop_duplicates(key)
    return {row[key]: json.loads(row["config_json"]) for _, row in first.iterrows()}


def without(config: Mapping[str, Any], leave_out: tuple[str, ...]) -> dict[str, Any]:
    """The configuration minus the dotted `leave_out` keys."""
    return configuration(dict(config), leave_out)


def group_titles(summary: Any, compare: str = ORDERS_AND_KD) -> dict[str, str]:
    """A title per pairing group (compression level): its target, plus whatever else differs
    between the groups (model, data, method, budget ...)."""
    configs = {
        key: paired_config(json.loads(text), compare)
        for key, text in summary.drop_duplicates("pairing_key")[
            ["pairing_key", "config_json"]
        ].itertuples(index=False)
    }
    keys = [k for k in distinguishing_keys(configs.values()) if k not in TARGET_KEYS]
    targets = summary.drop_duplicates("pairing_key").set_index("pairing_key")["target_ratio"]
    out = {}
    for key, config in configs.items():
        target = targets[key]
        title = f"target {_show(target)}" if target == target else "target n/a"
        extra = describe(config, keys)
        out[key] = f"{title} ({extra})" if extra else title
    return out


def series_labels(summary: Any, always: tuple[str, ...]) -> dict[str, str]:
    """A label per series (configurations that differ only in their target): the `always` keys,
    plus the keys whose values set it apart from the other series."""
    configs = {k: without(c, TARGET_KEYS) for k, c in configs_of(summary, "series_key").items()}
    return labels(configs, always=always)


def config_names(summary: Any) -> dict[str, str]:
    """A configuration's name in tables (keyed by fingerprint): its series' label with order and
    KD always said; the target goes in its own column."""
    names = series_labels(summary, ("schedule.name", "kd.name"))
    return dict(zip(summary[CONFIG_FINGERPRINT], summary["series_key"].map(names), strict=True))
