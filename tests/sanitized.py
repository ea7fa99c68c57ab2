"""Run first by `make sanitize`: the module under test is the sanitized build."""

from __future__ import annotations

import os

from vnet import _datapath


def test_the_sanitized_build_is_loaded() -> None:
    assert os.sep + "build" + os.sep + "sanitize" + os.sep in _datapath.__file__
