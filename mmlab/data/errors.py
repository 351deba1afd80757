"""Exceptions raised by the data loaders of :mod:`mmlab.data`.

Both exceptions subclass a built-in exception, so code that already catches
``FileNotFoundError`` or ``ValueError`` keeps working.  Their messages are
written for a reader of the book: each one says what went wrong, where, and
what to do about it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataNotFoundError", "DataIntegrityError", "check_named_root"]


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


def check_named_root(root: str | os.PathLike | None) -> None:
    """Raise :class:`DataNotFoundError` if ``root`` (a folder the user named: ``--data DIR`` on the
    command line, ``root=`` in Python) does not exist.

    A folder typed by hand that is not there is a mistake to say, not a source to skip: reading
    another one instead would train on data the user did not ask for. (A typo in the environment
    variable ``MMLAB_DATA`` is only warned about, and the search goes on.) ``None`` passes.
    """
    if root is None:
        return
    path = Path(root).expanduser()
    if path.is_dir():
        return
    what = "is a file, not a folder" if path.exists() else "does not exist"
    raise DataNotFoundError(
        f"The data folder {path} (given as --data, or root= in Python) {what}.\n"
        "mmlab looks for its data, in order, in: the folder given as --data / root=; the folder named by "
        "the environment variable MMLAB_DATA; the cache folder ($MMLAB_CACHE, else ~/.cache/mmlab); and "
        "finally downloads it into that cache. Each folder may hold the files directly or in a sub-folder "
        "per data set (mnist/, fsdd/recordings/, cremad/).\n"
        "How to fix this: correct the path, or leave --data out to use MMLAB_DATA, the cache and the download."
    )
