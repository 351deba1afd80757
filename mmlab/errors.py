"""Errors that the library raises on purpose, each with a message a reader can act on.

(The data layer has its own two, :class:`mmlab.data.DataNotFoundError` and
:class:`mmlab.data.DataIntegrityError`.)
"""

from __future__ import annotations

from typing import Iterable


class UnknownNameError(ValueError):
    """A dataset, method, profile or option name that does not exist."""

    def __init__(self, kind: str, name: object, valid: Iterable[str], *, source: str | None = None):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(
            f"Unknown {kind} {name!r}" + (f" (from {source})" if source else "")
            + f". Valid {plural(kind)}: {', '.join(self.valid)}."
        )


def plural(noun: str, count: int | None = None) -> str:
    """``modality`` -> ``modalities``, ``ogm_ge option`` -> ``ogm_ge options``; with a count,
    the count and the noun that fits it: ``1 run``, ``3 runs``, ``1,200 clips``."""
    many = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return many if count is None else f"{count:,} {noun if count == 1 else many}"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stopped.

    The last good checkpoint (end of the previous epoch) is kept on disk, so
    the run can be resumed with a smaller learning rate or inspected.
    """


class ResultsFileError(ValueError):
    """A results record that cannot be parsed or does not match its schema."""


class TimeLimitReached(RuntimeError):
    """A run stopped at an epoch's end because the next epoch would not have finished within
    its time limit (``train(..., deadline=...)``, ``sweep --time-limit``). Its checkpoint is
    kept: the same command, run again, resumes it."""

    def __init__(self, message: str, epochs_done: int):
        super().__init__(message)
        self.epochs_done = epochs_done


class OtherCodeWarning(UserWarning):
    """A cached ``smoke`` or ``quick`` record was made by other code than the code running now
    (its ``source_digest`` differs: the library was edited, or updated, since). It is returned as
    recorded; ``overwrite=True`` (``--overwrite``), or ``make clean``, trains it again."""


class NotCapturableError(RuntimeError):
    """A training step that a CUDA graph cannot replay faithfully (``train(..., cuda_graph=True)``):
    e.g. a method that logs a Python number per step, which the graph would freeze at its captured value."""
