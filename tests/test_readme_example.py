"""The README's first-contact commands, as a user types them: quantize the embedded model, run it on the shipped
example image (class 4 first), in a fresh folder through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digit-4.png"


def test_readme_quantize_then_run_on_the_shipped_example(tmp_path):
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing: the README's `intsim run` example needs it"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "intsim run digits.intsim examples/digit-4.png" in readme
    command = [sys.executable, "-m", "intsim.cli"]
    subprocess.run([*command, "quantize", "-o", "digits.intsim", "-j", "0"], cwd=tmp_path, check=True,
                   capture_output=True, text=True)
    run = subprocess.run([*command, "run", "digits.intsim", str(EXAMPLE)], cwd=tmp_path, check=True,
                         capture_output=True, text=True)
    first = next(line for line in run.stdout.splitlines() if line.strip().startswith("1."))
    assert "class 4" in first, run.stdout
    assert oct((tmp_path / "digits.intsim").stat().st_mode & 0o777) != oct(0o600)
