"""Run the installed ``xaibench`` entry point as a user would, in a subprocess."""

from __future__ import annotations

import contextlib
import io
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


def run_main(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """The CLI inside this process: the entry point's own ``main`` without an interpreter start (for the
    many small refusal cases; ``run_cli`` exercises the installed entry point itself)."""
    from xaibench.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    changes = {"XAIBENCH_DEBUG": "", **(env or {})}
    saved = {key: os.environ.get(key) for key in changes}
    try:
        os.environ.update(changes)
        os.chdir(cwd or previous)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        os.chdir(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli_in_process(tmp_path: Path):
    """``cli`` in this process (``run_main``), for modules of refusal cases."""
    return lambda *args, **kw: run_main(*args, cwd=kw.pop("cwd", tmp_path), **kw)


@pytest.fixture
def cli(tmp_path: Path):
    """``cli(*args)`` runs xaibench in ``tmp_path`` (so default runs/ land there)."""
    return lambda *args, **kw: run_cli(*args, cwd=kw.pop("cwd", tmp_path), **kw)
