"""The same calibration gives the same Program, byte for byte, on every CPU instruction path.

torch picks avx512, avx2 or plain kernels at run time (``ATEN_CPU_CAPABILITY`` forces one); their float reductions
differ in the last bits. intsim calibrates in float64 and rounds every calibrated scale up to the grid of
:func:`intsim.quant.qparams.snap_scale`, so those bits never reach an integer (docs/quantization.md, "The same
Program on every CPU"). These tests quantize in subprocesses, one per instruction path, and compare the files with
the committed Program of the embedded model (``golden/programs``, from which ``golden/e2e`` is generated).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intsim.quant.qparams import MIN_SCALE, SCALE_GRID_BITS, asymmetric_qparams, snap_scale

REPO = Path(__file__).resolve().parents[1]
COMMITTED_PROGRAM = REPO / "golden" / "programs" / "digits-fqvit-w8a8a4.intsim"
CAPABILITIES = ("default", "avx2", "avx512")

positive_scales = st.floats(min_value=MIN_SCALE, max_value=2.0**40, allow_nan=False, allow_infinity=False)


@given(positive_scales)
def test_snap_scale_rounds_up_to_the_grid_by_less_than_one_step(scale):
    snapped = snap_scale(scale)
    mantissa, exponent = math.frexp(snapped)
    assert math.ldexp(mantissa, SCALE_GRID_BITS) == int(math.ldexp(mantissa, SCALE_GRID_BITS))  # on the grid
    assert scale <= snapped < scale * (1 + 2.0 ** (1 - SCALE_GRID_BITS))
    assert snap_scale(snapped) == snapped


@given(positive_scales, positive_scales)
def test_snap_scale_is_monotone(a, b):
    low, high = sorted((a, b))
    assert snap_scale(low) <= snap_scale(high)


def test_scales_a_few_ulps_apart_snap_to_one_value():
    """What makes Programs CPU-independent: float64 noise far below the grid step disappears."""
    for lo, hi in ((-0.731, 2.919), (0.0, 13.37), (-5.0e-3, 1.0e-3)):
        reference = asymmetric_qparams(lo, hi, 8)
        for ulps in (1, 4, 16):
            noisy = asymmetric_qparams(lo, math.nextafter(hi, math.inf) if ulps == 1 else hi * (1 + ulps * 2.0**-52), 8)
            assert noisy == reference


def _capability_env(capability: str) -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, PYTHONHASHSEED="0")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _supported(capability: str) -> bool:
    """Does torch on this CPU run ``capability`` when forced (it falls back silently otherwise)?"""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    result = subprocess.run([sys.executable, "-c", probe], env=_capability_env(capability), capture_output=True,
                            text=True, check=True)
    return result.stdout.strip().lower() == capability


def _quantize_in_subprocess(capability: str, output: Path, *extra: str) -> bytes:
    if not _supported(capability):
        pytest.skip(f"this CPU has no {capability} kernels for torch (ATEN_CPU_CAPABILITY={capability} falls back)")
    command = [sys.executable, "-m", "intsim.cli", "quantize", "-c", "fqvit-w8a8a4", "--workers", "0",
               "-o", str(output), *extra]
    result = subprocess.run(command, env=_capability_env(capability), capture_output=True, text=True)
    assert result.returncode == 0, f"ATEN_CPU_CAPABILITY={capability}: {result.stderr[-2000:]}"
    return output.read_bytes()


def test_quantizing_the_embedded_model_reproduces_the_committed_program(tmp_path):
    """In this process, on whatever instruction path torch chose: the committed Program, byte for byte."""
    from intsim.evaluate import quantize
    from intsim.program import save_program
    from intsim.quant.configs import make_config

    assert COMMITTED_PROGRAM.is_file(), f"{COMMITTED_PROGRAM} is missing: run python tools/make_golden.py --requantize"
    _, program = quantize(None, None, None, make_config("fqvit-w8a8a4"), workers=0)
    written = save_program(program, tmp_path / "digits.intsim").read_bytes()
    assert written == COMMITTED_PROGRAM.read_bytes(), (
        "quantizing the embedded model no longer gives golden/programs/digits-fqvit-w8a8a4.intsim; if the "
        "calibration or the exporter changed on purpose, run python tools/make_golden.py --requantize and review")


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_embedded_model_program_is_the_same_on_every_instruction_path(capability, tmp_path):
    written = _quantize_in_subprocess(capability, tmp_path / f"digits-{capability}.intsim")
    assert written == COMMITTED_PROGRAM.read_bytes(), f"ATEN_CPU_CAPABILITY={capability} gives another Program"


@pytest.mark.slow
@pytest.mark.realdata
def test_vit_tiny_program_is_the_same_on_every_instruction_path(shared_data, tmp_path):
    """Real ViT-Ti, 64 calibration images, ``fqvit-w8a8a4``: three instruction paths, one file (~1 min each)."""
    weights = shared_data / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    extra = ("-m", "vit_tiny_patch16_224", "-w", str(weights), "--calib", str(shared_data / "imagenet-calib-256"),
             "--calib-limit", "64")
    files = {capability: _quantize_in_subprocess(capability, tmp_path / f"vit-{capability}.intsim", *extra)
             for capability in CAPABILITIES}
    assert files["default"] == files["avx2"] == files["avx512"]


_ADALOG_SNIPPET = """
import sys
from intsim.evaluate import quantize
from intsim.program import save_program
from intsim.quant.configs import make_config
_, program = quantize(None, None, None, make_config("adalog-w4a4", search_rounds=1, search_steps=2), workers=0)
save_program(program, sys.argv[1])
"""


def _adalog_in_subprocess(output: Path, env: dict) -> bytes:
    result = subprocess.run([sys.executable, "-c", _ADALOG_SNIPPET, str(output)], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return output.read_bytes()


@pytest.fixture(scope="module")
def native_adalog_program(tmp_path_factory) -> bytes:
    """The AdaLog Program of the embedded model on the instruction path torch picks by itself."""
    return _adalog_in_subprocess(tmp_path_factory.mktemp("adalog") / "native.intsim", dict(os.environ, PYTHONHASHSEED="0"))


@pytest.mark.slow
@pytest.mark.parametrize("capability", ("default", "avx2"))
def test_adalog_program_is_the_same_on_every_instruction_path(capability, native_adalog_program, tmp_path):
    """The AdaLog search (argmins over float64 errors, the reparameterization stored as floats) on the embedded
    model: the file of a forced instruction path equals the native path's (~30 s each)."""
    if not _supported(capability):
        pytest.skip(f"this CPU has no {capability} kernels for torch (ATEN_CPU_CAPABILITY={capability} falls back)")
    forced = _adalog_in_subprocess(tmp_path / f"digits-adalog-{capability}.intsim", _capability_env(capability))
    assert forced == native_adalog_program, f"ATEN_CPU_CAPABILITY={capability} gives another AdaLog Program"
