"""Fixtures of the golden-vector tests: Programs of the embedded digits model (the committed one of golden/e2e,
and a fqvit-w8a8a8 one quantized once per session) and golden trees made from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from golden_helpers import COMMITTED, COMMITTED_PROGRAM


def _program(config: str, **overrides):
    pytest.importorskip("torch")
    from intsim.evaluate import quantize
    from intsim.quant.configs import make_config

    return quantize(None, None, None, make_config(config, **overrides), workers=0)[1]


@pytest.fixture(scope="session")
def lis_program():
    """The embedded digits model, fqvit-w8a8a4 (Log-Int-Softmax): the committed Program golden/e2e is made from."""
    from intsim.program import load_program

    if not COMMITTED_PROGRAM.is_file():
        pytest.fail(f"{COMMITTED_PROGRAM} is missing: run python tools/make_golden.py --requantize")
    return load_program(COMMITTED_PROGRAM)


@pytest.fixture(scope="session")
def uniform_program():
    """The embedded digits model, fqvit-w8a8a8 (the 8-bit uniform softmax)."""
    return _program("fqvit-w8a8a8")


@pytest.fixture(scope="session")
def adalog_program():
    """The embedded digits model, adalog-w4a4 at a small search budget (its log-domain kinds: LogEncode,
    LogAttentionValues, AsymmetricLinear, LogLinear)."""
    return _program("adalog-w4a4", search_rounds=1, search_steps=2)


@pytest.fixture(scope="session")
def adalog_golden(adalog_program, tmp_path_factory) -> Path:
    """A golden tree of the adalog-w4a4 Program on held-out image 0."""
    from intsim.golden.cli import load_images
    from intsim.golden.writer import write_golden

    output = tmp_path_factory.mktemp("adalog") / "golden"
    write_golden(adalog_program, load_images(adalog_program, None, 1), output, progress=False)
    return output


@pytest.fixture(scope="session")
def lis_program_file(lis_program, tmp_path_factory) -> Path:
    from intsim.program import save_program

    return save_program(lis_program, tmp_path_factory.mktemp("program") / "digits.intsim")


@pytest.fixture(scope="session")
def uniform_golden(uniform_program, tmp_path_factory) -> Path:
    """A golden tree of the fqvit-w8a8a8 Program on held-out image 0."""
    from intsim.golden.cli import load_images
    from intsim.golden.writer import write_golden

    output = tmp_path_factory.mktemp("uniform") / "golden"
    write_golden(uniform_program, load_images(uniform_program, None, 1), output, progress=False)
    return output


@pytest.fixture(scope="session")
def lis_golden(tmp_path_factory) -> Path:
    """A private copy of the committed end-to-end set (fqvit-w8a8a4, held-out image 0)."""
    if not (COMMITTED / "e2e" / "manifest.json").is_file():
        pytest.fail(f"{COMMITTED / 'e2e'} is missing: run python tools/make_golden.py")
    return Path(shutil.copytree(COMMITTED / "e2e", tmp_path_factory.mktemp("lis") / "golden"))
