"""Errors that the command line reports as one line and a non-zero exit."""


class KdpruneError(Exception):
    """Base class for errors a user can fix (bad config, missing data): no traceback."""


class ConfigError(KdpruneError, ValueError):
    """A configuration value is out of range or names something that does not exist."""


class DataError(KdpruneError):
    """A data set cannot be found or loaded."""


class NonFiniteLossError(KdpruneError, FloatingPointError):
    """Training produced a NaN or infinite loss."""
