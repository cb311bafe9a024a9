"""Errors that the CLI turns into a clear message and exit code 2 (never a traceback)."""

from __future__ import annotations


class MtbenchError(Exception):
    """Base class: a problem the user can fix (bad input, broken plugin, missing file)."""

    exit_code = 2


class ConfigError(MtbenchError):
    """One or more problems in a grid file, each with its location.

    ``problems`` is a list of ``(location, message)``; the location names the file and the
    table/key path, e.g. ``grid.toml: attack[0].eps[1]``.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"{len(problems)} problem(s):"] + [f"  - {loc}: {msg}" for loc, msg in problems]
        super().__init__("\n".join(lines))


class PluginError(MtbenchError):
    """A plugin could not be loaded or registered; the message names its distribution."""


class DataError(MtbenchError):
    """A data file is missing, corrupt or not in the expected format; the message names the file."""


class CheckpointError(MtbenchError):
    """A checkpoint is missing, tampered with, or not a safetensors file."""


class TrainingError(MtbenchError):
    """A training trial cannot go on (a NaN or infinite loss); the trial is stored as failed."""
