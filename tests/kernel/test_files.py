"""Files written whole, with their mode exact whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vnet.kernel.files import write_file


def test_written_whole_with_the_mode_asked(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    old = os.umask(0o077)  # would strip the group/other read bits of 0644
    try:
        write_file(path, "FLANNEL_MTU=1472\n", 0o644)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        write_file(path, "secret\n", 0o600)  # replaces the file, mode and all
    finally:
        os.umask(old)
    assert path.read_text() == "secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subnet.env"]  # no temporary left
