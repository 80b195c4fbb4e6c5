"""golden/README.md's SystemVerilog example, extracted from the README itself, compiled with Icarus Verilog
(``iverilog -g2012 -Wall``: no warning) and run on every committed tie tree: the right rounding mode reproduces the
golden Requantize output bit for bit, every other mode does not."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from golden_helpers import COMMITTED, REPO

from intsim.ops import ROUNDING_MODES

_RESULT = re.compile(r"^(\S+): (\d+) of (\d+) elements differ$", re.MULTILINE)


def _systemverilog_example() -> str:
    blocks = re.findall(r"```systemverilog\n(.*?)```", (COMMITTED / "README.md").read_text(), re.DOTALL)
    assert len(blocks) == 1, "golden/README.md should hold one SystemVerilog example"
    return blocks[0] if blocks[0].lstrip().startswith(("module", "//")) else f"module tb;\n{blocks[0]}endmodule\n"


@pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                    reason="Icarus Verilog (iverilog, vvp) is not on PATH: apt-get install iverilog")
def test_readme_systemverilog_example_compiles_cleanly_and_catches_a_wrong_rounding(tmp_path):
    source = tmp_path / "example.sv"
    source.write_text(_systemverilog_example())
    module = re.search(r"^module (\w+)", source.read_text(), re.MULTILINE).group(1)
    for tree_mode in ROUNDING_MODES:
        for code, rounding in enumerate(ROUNDING_MODES):
            binary = tmp_path / f"{tree_mode}_{rounding}.vvp"
            compiled = subprocess.run(["iverilog", "-g2012", "-Wall", f'-P{module}.DIR="golden/ties/{tree_mode}"',
                                       f"-P{module}.ROUNDING={code}", "-o", str(binary), str(source)],
                                      capture_output=True, text=True, cwd=REPO)
            assert compiled.returncode == 0 and not (compiled.stdout + compiled.stderr).strip(), compiled.stderr
            ran = subprocess.run(["vvp", "-n", str(binary)], capture_output=True, text=True, cwd=REPO, timeout=60)
            output = ran.stdout + ran.stderr
            assert ran.returncode == 0 and "warning" not in output.lower() and "error" not in output.lower(), output
            (folder, differ, total), = _RESULT.findall(output)
            assert folder == f"golden/ties/{tree_mode}" and int(total) == 128
            assert (int(differ) == 0) == (rounding == tree_mode), (tree_mode, rounding, output)
