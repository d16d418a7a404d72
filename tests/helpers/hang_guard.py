"""The one time limit a test may set: a guard against a hang, never a measurement.

A test waits on the real event (a process's exit, a pipe's end, a lock, an Event). Where that
wait could last forever on a bug (a prompt on a terminal, a deadlock, a child that never exits),
it gives up after HANG_GUARD seconds, so that CI fails instead of hanging. It is far beyond what
any guarded wait takes, however busy the machine: a load slows a test, it never trips the guard.
pytest sets no total time limit of its own (no pytest-timeout; see pyproject.toml, Makefile).
"""

HANG_GUARD = 900  # seconds (15 minutes)
