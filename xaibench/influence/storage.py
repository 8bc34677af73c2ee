"""Factors on disk (safetensors + a JSON of the arguments) and the checkpoints of interrupted work.

A factors directory holds ``factors.safetensors`` (float64 tensors keyed "<module>/<name>"),
``factors.json`` (format tag, strategy, tracked module shapes, and the arguments that made them: fit
options, the model file's sha256 and the training data's fingerprint) and ``run.json``. ``influence
score`` compares the arguments with its own model before using the factors.

Interrupted fits and scores leave their running state in a hidden ``.<name>.partial`` folder beside the
destination: one safetensors file per stage with the chunks done, written atomically after every
chunk together with the arguments it belongs to; a rerun with the same arguments continues from there.
Under torchrun every process writes its own stage files (their names carry the rank and world size,
``factors.checkpoint_stage``) into the same folder; the arguments file is replaced through a temporary
file of the writing process's own, so concurrent writers never clash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xaibench.errors import InputError
from xaibench.influence.factors import Factors

FORMAT = "xaibench-influence-factors/1"
TENSORS_FILE, ARGUMENTS_FILE = "factors.safetensors", "factors.json"


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 over the tensors' shapes, dtypes and bytes: identifies the data factors were fitted on."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def save_factors(directory: Path, factors: Factors, arguments: dict[str, Any]) -> None:
    """Write the factors and their arguments into ``directory`` (which must exist)."""
    tensors = {key: value.contiguous() for key, value in factors.tensors.items()}
    save_file(tensors, str(directory / TENSORS_FILE))
    shapes = {name: list(shape) for name, shape in factors.shapes.items()}
    (directory / ARGUMENTS_FILE).write_text(json.dumps(
        {"format": FORMAT, "strategy": factors.strategy, "modules": shapes, "arguments": arguments},
        indent=2) + "\n")


def load_factors(directory: Path) -> tuple[Factors, dict[str, Any]]:
    """Factors and their arguments from a directory written by ``influence fit``.

    Raises:
        InputError: not a factors directory, or an unreadable / foreign file.
    """
    directory = Path(directory)
    described = directory / ARGUMENTS_FILE
    if not described.is_file():
        raise InputError(f"{directory} holds no influence factors (no {ARGUMENTS_FILE}); "
                         "make them with xaibench influence fit")
    try:
        info = json.loads(described.read_text())
        tensors = load_file(str(directory / TENSORS_FILE))
    except (OSError, json.JSONDecodeError, SafetensorError) as err:
        raise InputError(f"cannot read the factors in {directory}: {err}") from None
    if info.get("format") != FORMAT:
        raise InputError(f"{described} is not an xaibench factors file (format {info.get('format')!r})")
    shapes = {name: tuple(shape) for name, shape in info["modules"].items()}
    return Factors(info["strategy"], shapes, tensors), info["arguments"]


class PartialWork:
    """A ``Checkpoint`` on disk: stage files in ``folder``, valid only for the same ``arguments``."""

    def __init__(self, folder: Path, arguments: dict[str, Any]) -> None:
        self.folder, self.arguments = Path(folder), arguments
        self.identity = json.dumps(arguments, sort_keys=True, default=str)

    @classmethod
    def beside(cls, destination: Path, arguments: dict[str, Any]) -> PartialWork:
        """The partial folder of ``destination``; refuses one left by work with other arguments."""
        work = cls(destination.parent / f".{destination.name}.partial", arguments)
        recorded = work.folder / "arguments.json"
        if recorded.is_file() and recorded.read_text() != work.identity:
            raise InputError(f"{work.folder} holds an interrupted run with other arguments; rerun with the "
                             "same arguments to resume it, or delete the folder to start over")
        return work

    def load(self, stage: str) -> tuple[dict[str, torch.Tensor], int] | None:
        path = self.folder / f"{stage}.safetensors"
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError):
            return None  # a file cut short by a kill before its rename cannot exist; be safe anyway
        done = int(tensors.pop("__done__"))
        return tensors, done

    def save(self, stage: str, sums: dict[str, torch.Tensor], done: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _replace_text(self.folder / "arguments.json", self.identity)
        path = self.folder / f"{stage}.safetensors"
        tmp = path.with_name(f".{path.name}.tmp")
        tensors = {key: value.contiguous() for key, value in sums.items()}
        save_file({**tensors, "__done__": torch.tensor(done)}, str(tmp))
        os.replace(tmp, path)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # processes of one torchrun share the folder
    tmp.write_text(text)
    os.replace(tmp, path)
