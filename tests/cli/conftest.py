"""Run the installed ``xaibench`` entry point as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"
EXE = Path(sys.executable).with_name("xaibench")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    environment = {**os.environ, "XAIBENCH_DEBUG": "", **(env or {})}
    proc = subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd, env=environment,
                          timeout=600)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(tmp_path: Path):
    """``cli(*args)`` runs xaibench in ``tmp_path`` (so default runs/ land there)."""
    return lambda *args, **kw: run_cli(*args, cwd=kw.pop("cwd", tmp_path), **kw)
