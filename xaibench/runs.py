"""Run directories: every command that computes writes one, atomically, never over an existing run.

A run is assembled in a hidden temporary folder beside its destination and renamed into place when
complete, so a failed or interrupted command leaves no half-written run and never damages an existing
one. ``--overwrite`` swaps the old run out only after the new one is complete.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xaibench import __version__
from xaibench.errors import InputError, RunExistsError

RUN_FILE = "run.json"
ATTRIBUTIONS_FILE = "attributions.safetensors"
HEATMAPS_DIR = "heatmaps"


def default_run_dir(command: str, *parts: str) -> Path:
    """runs/<command>-<parts>-<UTC timestamp>, unique within the second."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    stem = "-".join([command, *[p for p in parts if p], stamp])
    path = Path("runs") / stem
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{stem}-{suffix}"
    return path


def check_destination(out: Path, overwrite: bool, marker: str = RUN_FILE) -> None:
    """Fail early (exit 2) when ``out`` exists and may not be replaced.

    ``--overwrite`` replaces only what xaibench wrote: a folder holding ``marker`` (run.json for a run)
    or an empty one, never an arbitrary directory.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    if not overwrite:
        raise RunExistsError(f"output directory {out} exists; pass --overwrite to replace it")
    if any(out.iterdir()) and not (out / marker).is_file():
        raise RunExistsError(f"{out} exists and was not written by xaibench (no {marker}); "
                             "refusing to replace it")


@contextmanager
def staged_dir(out: Path, overwrite: bool, marker: str = RUN_FILE) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes ``out``, on error it is removed."""
    check_destination(out, overwrite, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield staging
        check_destination(out, overwrite, marker)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_run(run_dir: Path) -> dict[str, Any]:
    """run.json of ``run_dir``; InputError when it is not a run directory."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise InputError(f"{run_dir} is not an xaibench run directory (no {RUN_FILE})")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from None


def versions() -> dict[str, str]:
    """Versions recorded in run.json."""
    import captum
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "captum": captum.__version__,
        "xaibench": __version__,
    }


def run_record(command: str, argv: list[str], config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The common part of run.json; commands add model, data, timings and outputs. ``world_size`` is the
    number of processes that computed the run (torchrun; 1 alone)."""
    from xaibench.distributed import world

    return {
        "command": command,
        "argv": argv,
        "config": config,
        "seed": seed,
        "world_size": world().size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
