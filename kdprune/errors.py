"""Errors that the command line reports as one line and a non-zero exit."""

import re

# How a rank's one line starts when it failed because a collective with another rank failed (a
# consequence of that rank's death, not a cause): kdprune.launch names the cause instead.
COLLECTIVE_FAILED = "a collective failed"


class KdpruneError(Exception):
    """Base class for errors a user can fix (bad config, missing data): no traceback."""


class ConfigError(KdpruneError, ValueError):
    """A configuration value is out of range or names something that does not exist."""


class DataError(KdpruneError):
    """A data set cannot be found or loaded."""


class NonFiniteLossError(KdpruneError, FloatingPointError):
    """Training produced a NaN or infinite loss: `where` says in which stage, epoch and step."""

    def __init__(self, message: str, stage: str = "", epoch: int = 0, step: int = 0):
        super().__init__(message)
        self.where = {"stage": stage, "epoch": epoch, "step": step}


class MixedCpuError(KdpruneError):
    """A study's measured-latency objective or constraint would take a value timed on another CPU
    than its earlier trials' (`kdprune.sweeping.one_cpu.OneCpu`): exit code 2."""


class FaultError(KdpruneError):
    """Something outside the configuration failed (a database, the disk): exit code 1."""


class Preempted(BaseException):
    """The process was told to stop (SIGTERM: a batch scheduler's time limit or preemption).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` keeps the run going:
    it unwinds through every atomic write (which removes its temporary file) and ends the
    command with exit code 143 (128 + SIGTERM), leaving the training state of the last
    finished epoch for the same command to resume from.
    """


def one_line(err: BaseException) -> str:
    """An error's message as one sentence: Hydra's several-line composition and override-parsing
    errors shortened to what a user needs; others cut to their first line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].startswith("Could not override") and len(lines) > 1:
        return f"{lines[0].rstrip('.')}: no such key ({lines[1][0].lower()}{lines[1][1:]})"
    if lines[0].endswith(":") and len(lines) > 1:  # Hydra: "... raised while composing config:"
        return f"{lines[0]} {lines[1]}"
    parsed = re.match(r"Error when parsing index: \d+, string: (.*) out of \[", lines[0])
    if parsed and len(lines) > 1:
        return f"cannot parse the override {parsed.group(1)!r}: {lines[1]}"
    return lines[0]


def os_error_line(err: OSError) -> str:
    """An OSError as one line naming its path: `<path>: No space left on device`."""
    reason = err.strerror or str(err)
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason
