"""Run directories: every command that computes writes one, atomically, never over an existing run.

A run is assembled in a hidden temporary folder beside its destination and renamed into place when
complete, so a failed or interrupted command leaves no half-written run and never damages an existing
one. ``--overwrite`` swaps the old run out only after the new one is complete, and only when the old one
is provably xaibench's (``xaibench.core.ownership``: the manifest every committed folder carries).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xaibench import __version__
from xaibench.core import ownership
from xaibench.core.credentials import scrubbed
from xaibench.core.errors import InputError, RunExistsError, first_line

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


#: bytes a staging folder's name adds to the output name (".NAME.tmp-PID-RANDOM")
STAGING_SUFFIX_BYTES = 32


def check_destination(out: Path, overwrite: bool, root: Path | None = None) -> None:
    """Fail early (exit 2) when ``out`` may not be written.

    ``--overwrite`` replaces only what xaibench provably wrote (``ownership.foreign_entry``: a valid
    manifest listing every file with its content) or an empty folder, never anything else. ``root``:
    the folder whose manifest covers ``out`` when ``out`` lies inside it (a run's heatmaps/).
    """
    _check_name(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    if not overwrite:
        raise RunExistsError(f"output directory {out} exists; pass --overwrite to replace it")
    if not any(out.iterdir()):
        return
    reason = ownership.foreign_entry(out, root)
    if reason is not None:
        raise RunExistsError(f"{out} was not written by xaibench ({reason}); refusing to replace it")


def check_file_destination(out: Path, overwrite: bool, ours: Callable[[Path], bool], what: str) -> None:
    """The rule of ``check_destination`` for a single output file: an existing file is replaced only with
    ``overwrite`` and only when ``ours(out)`` proves xaibench wrote it (a tag inside the file)."""
    _check_name(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_file():
        raise InputError(f"output path {out} exists and is not a regular file")
    if not overwrite:
        raise RunExistsError(f"{out} exists; pass --overwrite to replace it")
    if not ours(out):
        raise RunExistsError(f"{out} is not {what} written by xaibench; refusing to replace it")


def _check_name(out: Path) -> None:
    """An output name the file system can hold, staging suffix included."""
    try:
        limit = os.pathconf(_existing_ancestor(out), "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    size = len(os.fsencode(out.name))
    if size + STAGING_SUFFIX_BYTES > limit:
        raise InputError(f"output name {out.name[:40]}... is {size} bytes long; at most "
                         f"{limit - STAGING_SUFFIX_BYTES} fit on this file system")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute().parent
    while not path.exists():
        path = path.parent
    return path


@contextmanager
def staged_dir(out: Path, overwrite: bool, root: Path | None = None) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it gets a manifest and becomes ``out``, on error it
    is removed, with any parent folders this call created. ``root``: see ``check_destination``."""
    check_destination(out, overwrite, root)
    created = _make_parents(out.parent)
    try:
        ownership.remove_stale_staging(out)
        staging = Path(tempfile.mkdtemp(prefix=ownership.staging_prefix(out), dir=out.parent))
    except BaseException:
        _remove_created(created)
        raise
    try:
        ownership.claim(staging)
        yield staging
        ownership.release(staging)
        ownership.write_manifest(staging)
        check_destination(out, overwrite, root)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)
        raise


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # another process made it meanwhile: not ours to remove
            missing.remove(path)
        except OSError as err:
            _remove_created([p for p in missing if p.exists()])
            raise InputError(f"cannot create {path}: {err.strerror}") from None
    return missing


def _remove_created(created: list[Path]) -> None:
    for path in created:  # deepest first; a folder something else filled meanwhile stays
        try:
            path.rmdir()
        except OSError:
            pass


def _swap_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = ownership.retired_name(out)
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), URL credentials removed from every text."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(scrubbed(data), indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_run(run_dir: Path) -> dict[str, Any]:
    """run.json of ``run_dir``; InputError when it is not a run directory."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise InputError(f"{run_dir} is not an xaibench run directory (no {RUN_FILE})")
    record = read_json(path)
    if not isinstance(record, dict):
        raise InputError(f"{path} is not a run record (a JSON object)")
    return record


def read_json(path: Path) -> Any:
    """A JSON file xaibench wrote, as data; InputError for anything unreadable (also nesting so deep
    that the parser gives up)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InputError(f"cannot read {path}: {first_line(err)[:200]}") from None


def plain_name(value: Any, what: str, source: Path) -> str:
    """``value`` when it is a plain file name (text, no separator, not hidden, no ``..``), else an
    InputError naming ``source``: names read from files become paths only through this check."""
    if (not isinstance(value, str) or not value or len(value) > 200 or value.startswith(".")
            or any(c in value for c in '/\\\0') or value != value.strip() or not value.isprintable()):
        raise InputError(f"{source}: {what} {str(value)[:60]!r} is not a plain name")
    return value


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
    from xaibench.core.distributed import world

    return {
        "command": command,
        "argv": argv,
        "config": config,
        "seed": seed,
        "world_size": world().size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
