"""Exceptions raised by the data loaders of :mod:`mmlab.data`.

Both exceptions subclass a built-in exception, so code that already catches
``FileNotFoundError`` or ``ValueError`` keeps working.  Their messages are
written for a reader of the book: each one says what went wrong, where, and
what to do about it.
"""

from __future__ import annotations

__all__ = ["DataNotFoundError", "DataIntegrityError"]


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found in any folder and could not be downloaded.

    The message lists every folder that was looked in (and every download
    mirror that was tried, with the error it gave), followed by how to fix it,
    for example by pointing the ``MMLAB_DATA`` environment variable at a folder
    that holds the files.
    """

    def __str__(self) -> str:
        # FileNotFoundError formats itself as "[Errno ...] ..." when it is given
        # several arguments; we always give one message, so show it as it is.
        return str(self.args[0]) if self.args else ""


class DataIntegrityError(ValueError):
    """A data file exists but its content is wrong (truncated, corrupt or altered).

    Such a file is never used and never silently skipped in favour of another
    copy: the message names the file, says what is wrong with it and advises
    deleting it so that a fresh copy can be fetched.
    """
