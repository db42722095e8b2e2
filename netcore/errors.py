"""The exceptions netcore raises on purpose: each carries a message a user can act on.

Callers (the CLI, the flows) catch `NetcoreError` and print its message instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class NetcoreError(Exception):
    """Base class for every error netcore raises deliberately."""


class FileProblem(NetcoreError):
    """A file exists (or should) but cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple:
        # Rebuilt from (path, problem), not from the message: it crosses process boundaries
        # (a Dask worker's task, a worker process's chunk).
        return type(self), (self.path, self.problem)


class ModelFileError(FileProblem):
    """A weights or config file is missing, malformed, or does not match its config."""


class DataFileError(FileProblem):
    """A dataset file (Parquet, .npy) has the wrong schema, size, labels or images."""


class DiskFullError(FileProblem):
    """No room to write a file: the device is full (ENOSPC), a disk quota is used up (EDQUOT), or
    the file would pass the process's file-size limit (EFBIG)."""


class ImageError(FileProblem):
    """An image file is empty, broken, too large, blank, or not an image at all."""


class TrainingDiverged(NetcoreError):
    """The loss became NaN or infinite."""
