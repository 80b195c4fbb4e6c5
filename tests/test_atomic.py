"""Outputs appear whole or not at all, with the permissions of an ordinary file (never tempfile's 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from intsim.atomic import write_atomically
from intsim.cli_common import write_json


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_ordinary_permissions(tmp_path, umask_022):
    from tests.test_program import tiny_program
    from intsim.program import save_program

    assert _mode(write_atomically(tmp_path / "a.bin", b"x")) == 0o644
    write_json(str(tmp_path / "r.json"), {"a": 1})
    assert _mode(tmp_path / "r.json") == 0o644
    assert _mode(save_program(tiny_program(), tmp_path / "p.intsim")) == 0o644


def test_an_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(TypeError):
        write_atomically(target, 12345)  # not bytes or str: the write fails after the partial file exists
    assert not target.exists() and not list(tmp_path.iterdir())
