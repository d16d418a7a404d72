"""The orders are classes built from `schedule.order`, each with its own options and rules."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.compose import compose_cfg

from kdprune.errors import ConfigError
from kdprune.schedules.names import ORDER_NAMES
from kdprune.schedules.orders import Joint, Order, PruneThenDistill, order_of


@pytest.mark.parametrize("name", ORDER_NAMES)
def test_each_schedule_option_builds_its_order_class(name: str) -> None:
    order = order_of(compose_cfg(f"schedule={name}"))
    assert isinstance(order, Order) and type(order).name == name


def test_overrides_reach_the_order_and_the_recorded_keys_stay() -> None:
    cfg = compose_cfg("schedule=joint", "schedule.pruning_steps=4", "budget.finetune_epochs=2")
    order = order_of(cfg)
    assert isinstance(order, Joint) and order.pruning_steps == 4
    assert (order.joint_epochs, order.finetune_epochs) == (6, 2)
    # Every run's config records the schedule node as it was (fingerprints depend on it).
    assert cfg.schedule.order["_target_"] == "kdprune.schedules.joint"
    assert cfg.schedule.order["_partial_"] is True


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (("schedule=joint", "schedule.pruning_steps=0"), "schedule.pruning_steps"),
        (("schedule=joint", "schedule.pruning_end=0.0"), "must come after pruning_start"),
        (("schedule=prune_then_distill", "schedule.prune_target=both"), "prune_target"),
    ],
)
def test_an_order_refuses_its_own_bad_options(overrides: tuple[str, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        order_of(compose_cfg(*overrides))


def test_prune_then_distill_says_when_it_prunes_the_teacher() -> None:
    cfg = compose_cfg("schedule=prune_then_distill", "schedule.prune_target=teacher")
    order = order_of(cfg)
    assert isinstance(order, PruneThenDistill) and order.prunes_teacher(cfg)
    student = compose_cfg("schedule=prune_then_distill", "student_init=teacher")
    assert not order_of(student).prunes_teacher(student)


def test_the_order_names_and_the_report_statistics_load_without_torch() -> None:
    code = (
        "import sys, kdprune.schedules.names, kdprune.reporting.statistics\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
