"""Fetching a file over the network (or a ``file://`` URL in tests), for the two datasets that
download themselves: MNIST (:mod:`mmlab.data.mnist`) and the spoken digits (:mod:`mmlab.data.avdigits`)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

#: What a failed fetch raises: no network, a refused or timed-out connection, an HTTP error
#: (a subclass of ``URLError``), a malformed URL.
FETCH_ERRORS = (urllib.error.URLError, socket.timeout, OSError, ValueError)


def fetch(url: str, timeout: float) -> bytes:
    """The bytes at ``url``; raises one of :data:`FETCH_ERRORS`."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
        return response.read()


def fetch_failure(err: BaseException) -> str:
    """Why a fetch failed, in a few words (the ``reason`` of a ``URLError``, else the error)."""
    return str(getattr(err, "reason", err))
