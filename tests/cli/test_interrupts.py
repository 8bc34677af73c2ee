"""Ctrl-C and termination end a run with one line and a documented exit code, leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.conftest import EXE, SAMPLES


def _catches_sigterm(pid: int) -> bool:
    """Whether the process installed its own SIGTERM handler (xaibench's main did, so it is running)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal masks from /proc")
@pytest.mark.parametrize("signum, code, message", [(signal.SIGINT, 130, "error: interrupted"),
                                                   (signal.SIGTERM, 143, "error: terminated")])
def test_a_signal_ends_the_run_with_one_line_and_nothing_left(tmp_path, signum, code, message):
    out = tmp_path / "new" / "run"
    process = subprocess.Popen(
        [str(EXE), "explain", str(SAMPLES / "digits_cnn.pt"), "--method", "kernel_shap", "--n", "300",
         "-p", "n_samples=2000", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "XAIBENCH_DEBUG": ""})
    deadline = time.monotonic() + 120
    while not _catches_sigterm(process.pid):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert stderr.strip().splitlines() == [message]
    assert list(tmp_path.iterdir()) == []
