"""Progress bars on long work: tqdm's, shown unless the caller (``progress=False``, ``--no-progress``)
or the environment turns them off.

tqdm reads ``TQDM_DISABLE`` only where a call leaves ``disable`` unset -- and its notebook bar
(``tqdm.auto`` in Jupyter) never does; every bar in ``mmlab`` and the chapters comes from here, so the
variable is honoured here, read as tqdm reads it: any value but the empty one turns the bars off
(``TQDM_DISABLE=0`` too). The book's build sets it for the chapters' kernels: in an executed notebook
a bar is a widget whose state would be stored for nothing.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm


def progress_bar(iterable: Any = None, *, progress: bool = True, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)``, disabled where ``progress`` is false or ``TQDM_DISABLE`` is set to
    anything but the empty string."""
    off = not progress or bool(os.environ.get("TQDM_DISABLE"))
    return tqdm(iterable, disable=off, **options)
