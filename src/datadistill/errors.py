"""The exceptions datadistill raises on purpose. The CLI prints their message as one line."""


class DatadistillError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(DatadistillError, ValueError):
    """An unknown option, method, preset, or a value out of range."""


class DistillError(DatadistillError, RuntimeError):
    """Distillation cannot go on (for example the loss became NaN)."""


class DivergedError(DistillError):
    """The optimization diverged (a NaN or infinite loss, a step size that left its range)."""


class FormatError(DatadistillError, ValueError):
    """A file is not a datadistill file, or is corrupt."""


class OutputError(DatadistillError, OSError):
    """An output file or folder cannot be written where it was asked for (a file where a folder is
    needed or the reverse, no permission, a read-only place, a full disk)."""
