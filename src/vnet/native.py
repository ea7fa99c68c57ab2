"""The native data-path module, when it is built and chosen: ``vnet._datapath`` (C, see
docs/performance.md), or None. ``VNET_DATAPATH=python`` chooses the Python references
instead; every user of the module keeps one and falls back to it."""

from __future__ import annotations

import os
from types import ModuleType

from vnet import libcrypto


def _load() -> ModuleType | None:
    if os.environ.get("VNET_DATAPATH", "native") == "python":
        return None
    try:
        from vnet import _datapath
    except ImportError:
        return None
    return _datapath


datapath = _load()
_CODE = libcrypto.CHOICE.describe()
IMPLEMENTATION = (
    f"native (C, {datapath.LIBCRYPTO}, {_CODE})" if datapath is not None else "python (reference)"
)
