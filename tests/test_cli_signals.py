"""The real ``intsim`` command stopped by a signal, and with its stdout pipe closed.

``intsim quantize -o OUT`` on the embedded digits ViT is started as a subprocess and sent SIGINT, SIGTERM or SIGHUP
at two points: early (while the calibration bar runs) and late (after the calibration pass, while the quantizers are
fixed and the Program exported). Each time: exit status 128 + signal number, exactly one message line on stderr
besides progress bars, no traceback, and neither OUT nor a hidden ``.OUT*.partial`` file left behind.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from intsim.cli_common import Interrupted, interruptible

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

_PROGRESS = re.compile(r"\[\d+:\d\d")  # a tqdm bar: "name:  50%|...| 1/2 [00:00<00:00, ...]"
ROOT = Path(__file__).resolve().parents[1]

EARLY = re.compile(r"calibrating:\s+\d+%")  # the calibration bar has been drawn (0 of 256 batches)
LATE = re.compile(r"calibration pass done")  # the line printed when the last calibration batch is observed


def message_lines(err: str) -> list[str]:
    """The stderr lines that are not progress bars (tqdm redraws with carriage returns)."""
    return [line for line in re.split(r"[\r\n]", err) if line.strip() and not _PROGRESS.search(line)]


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "intsim.cli", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=as_in_a_terminal)


def as_in_a_terminal() -> None:
    """The child's signals as a terminal gives them: a test runner started in the background (``cmd &``, as CI
    may be) has SIGINT ignored, which children inherit, and intsim rightly leaves an ignored signal ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _wait_for(process: subprocess.Popen, pattern: re.Pattern, timeout: float = 120.0) -> bytes:
    """Read stderr until ``pattern`` appears; what was read so far."""
    seen = b""
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while not pattern.search(seen.decode(errors="replace")):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError(f"never saw {pattern.pattern!r} on stderr: {seen.decode(errors='replace')[-2000:]}")
        if selector.select(timeout=0.5):
            chunk = os.read(process.stderr.fileno(), 65536)
            if not chunk:
                continue
            seen += chunk
    selector.close()
    return seen


@pytest.mark.parametrize("point", ["early", "late"])
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_interrupted_quantize_prints_one_line_and_leaves_no_output(signum, status, point, tmp_path):
    # one image per batch: 256 calibration batches, so the early signal lands while the bar runs
    process = _start(["quantize", "-b", "1", "-j", "0", "-o", "out.intsim"], tmp_path)
    try:
        seen = _wait_for(process, EARLY if point == "early" else LATE)
        process.send_signal(signum)
        out, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    err = (seen + rest).decode(errors="replace")
    assert process.returncode == status, (out, err)
    assert "Traceback" not in err, err
    lines = [line for line in message_lines(err) if not LATE.search(line)]
    name = signal.Signals(signum).name
    assert lines == [lines[0]] and lines[0].startswith(f"intsim quantize: interrupted by {name}"), lines
    assert not out.strip(), out  # no "wrote ..." line
    assert not (tmp_path / "out.intsim").exists()
    assert not list(tmp_path.glob(".out.intsim*.partial")), list(tmp_path.iterdir())
    assert list(tmp_path.iterdir()) == []


def test_closed_stdout_pipe_exits_quietly(tmp_path):
    """``intsim ops | head -1``: the reader goes after one line; no BrokenPipeError traceback."""
    process = _start(["ops"], tmp_path)
    process.stdout.readline()
    process.stdout.close()  # the reader has gone
    err = process.stderr.read().decode(errors="replace")
    process.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert process.returncode in (0, 141), err


def test_closed_stdout_pipe_in_a_shell_pipeline(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # many lines (ops listed 50 times) so the pipe closes while intsim still writes
    script = f"{sys.executable} -c \"from intsim.cli import main; [main(['ops']) for _ in range(50)]\" | head -1"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_interruptible_restores_the_previous_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Interrupted) as caught, interruptible():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
    assert caught.value.signum == signal.SIGTERM and caught.value.exit_status == 143
    assert isinstance(caught.value, KeyboardInterrupt)
    assert {s: signal.getsignal(s) for s in before} == before


def test_main_restores_the_previous_handlers(capsys):
    from intsim.cli import main

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert main(["ops"]) == 0
    assert {s: signal.getsignal(s) for s in before} == before


def test_open_progress_bars_are_ended_before_the_message(capsys):
    """A bar left open by the exception (not closed by its ``with``) is closed, so the one message starts a line."""
    from tqdm import tqdm

    from intsim.cli_common import close_progress_bars

    bar = tqdm(total=5, desc="bar")
    bar.update(1)
    close_progress_bars()
    err = capsys.readouterr().err
    assert err.endswith("\n") and bar.disable
