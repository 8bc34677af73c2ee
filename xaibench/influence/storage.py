"""Factors on disk (safetensors + a JSON of the arguments) and the checkpoints of interrupted work.

A factors directory holds ``factors.safetensors`` (tensors keyed "<module>/<name>", float64, or float32
or bfloat16 where ``influence fit --factor-dtype`` asked for them), ``factors.json`` (format tag,
strategy, tracked module shapes, stored dtype, and the arguments that made them: fit options, the model
file's sha256 and the training data's fingerprint) and ``run.json``. ``influence
score`` compares the arguments with its own model before using the factors; ``load_factors`` checks every
name, shape and tensor read back, since a factors folder may come from anyone.

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
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from xaibench.core.errors import InputError, first_line
from xaibench.influence.factors import STRATEGIES, Factors
from xaibench.influence.stored_tensors import STORED, StoredTensors
from xaibench.influence.tracking import SUPPORTED, parameter_count

FORMAT = "xaibench-influence-factors/1"
TENSORS_FILE, ARGUMENTS_FILE = "factors.safetensors", "factors.json"
MODULE_NAME = re.compile(r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)?")
SHA256 = re.compile(r"[0-9a-f]{64}")


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 over the tensors' shapes, dtypes and bytes: identifies the data factors were fitted on."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def save_factors(directory: Path, factors: Factors, arguments: dict[str, Any], dtype: str = "float64") -> None:
    """Write the factors and their arguments into ``directory`` (which must exist), from any device,
    the tensors rounded to ``dtype`` (float64, float32 or bfloat16: half or a quarter of the disk and of
    the reading; they are computed in float64 and read back as float64)."""
    if dtype not in STORED:
        raise InputError(f"factors are stored as {', '.join(STORED)}, not {dtype!r}")
    stored = getattr(torch, dtype)
    tensors = {key: value.detach().cpu().to(stored).contiguous() for key, value in factors.tensors.items()}
    if not all(bool(torch.isfinite(value).all()) for value in tensors.values()):
        raise InputError(f"the factors overflow {dtype}; store them as float64 (--factor-dtype float64)")
    save_file(tensors, str(directory / TENSORS_FILE))
    shapes = {name: list(shape) for name, shape in factors.shapes.items()}
    described = {"format": FORMAT, "strategy": factors.strategy, "modules": shapes, "dtype": dtype,
                 "arguments": arguments}
    if factors.decompositions:  # what was done to each covariance: read by people, not by xaibench
        described["eigendecompositions"] = factors.decompositions
    (directory / ARGUMENTS_FILE).write_text(json.dumps(described, indent=2) + "\n")


def load_factors(directory: Path, model: nn.Module | None = None, model_sha256: str | None = None,
                 device: torch.device | str = "cpu") -> tuple[Factors, dict[str, Any]]:
    """Factors and their arguments from a directory written by ``influence fit``, validated throughout.

    Nothing read from the files is used before it is checked: factors.json must describe a known strategy
    and plain module names with [out, in] shapes; factors.safetensors must hold exactly the finite tensors,
    in the dtype factors.json names, that strategy stores for those shapes. With ``model_sha256`` the factors must have been fitted
    on that model file; with ``model`` their modules must be its tracked modules, in order and shape.

    The tensors are checked one at a time and stay in the file: ``Factors.tensors`` reads each when it is
    used, onto ``device`` (``stored_tensors``), so a process never holds more of them than its work needs.

    Raises:
        InputError: one line naming the file and the problem.
    """
    directory = Path(directory)
    described = _factor_file(directory, ARGUMENTS_FILE)
    strategy, shapes, arguments, dtype = _read_description(described)
    if model_sha256 is not None:
        _check_model_file(described, arguments, model_sha256)
    stored = _factor_file(directory, TENSORS_FILE)
    tensors = StoredTensors(stored, _stored_shapes(strategy, shapes), f"{strategy} factors", device, dtype)
    if model is not None:  # before reading every tensor
        _check_modules(described, shapes, model)
    tensors.verify({"exact/fisher": _check_symmetric(stored)})
    return Factors(strategy, shapes, tensors), arguments


def _stored_shapes(strategy: str, shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    """The tensors ``fit_factors`` stores for ``strategy`` over modules of gradient shapes (out, in[+1])."""
    if strategy == "exact":
        size = sum(rows * cols for rows, cols in shapes.values())
        return {"exact/fisher": (size, size)}
    out: dict[str, tuple[int, ...]] = {}
    for name, (rows, cols) in shapes.items():
        if strategy in ("kfac", "ekfac"):
            out.update({f"{name}/A_values": (cols,), f"{name}/A_vectors": (cols, cols),
                        f"{name}/S_values": (rows,), f"{name}/S_vectors": (rows, rows)})
        if strategy in ("ekfac", "diagonal"):
            out[f"{name}/lambda"] = (rows, cols)
    return out


def _factor_file(directory: Path, name: str) -> Path:
    """``directory / name`` when it is a regular file inside ``directory`` (no link out, no device)."""
    path = directory / name
    try:
        inside = path.resolve().is_relative_to(directory.resolve())
    except (OSError, RuntimeError):  # a link loop
        inside = False
    if not inside:
        raise InputError(f"{path}: a link out of {directory} or into a loop; refusing to read it")
    if path.is_file():
        return path
    if name == ARGUMENTS_FILE:
        raise InputError(f"{directory} holds no influence factors (no {ARGUMENTS_FILE}); "
                         "make them with xaibench influence fit")
    raise InputError(f"{path}: is missing or not a regular file; fit the factors again")


def _read_description(path: Path) -> tuple[str, dict[str, tuple[int, int]], dict[str, Any], str]:
    """Strategy, module shapes, arguments and stored dtype (float64 when absent) of factors.json, each
    checked."""
    try:  # NaN / Infinity are not JSON, and would leave run.json unreadable when copied into it
        info = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except (OSError, ValueError, RecursionError) as err:
        raise InputError(f"{path}: not JSON ({first_line(err)})") from None
    if not isinstance(info, dict):
        raise InputError(f"{path}: not a JSON object")
    if info.get("format") != FORMAT:
        raise InputError(f"{path}: not an xaibench factors file (format {_shown(info.get('format'))})")
    missing = [key for key in ("strategy", "modules", "arguments") if key not in info]
    if missing:
        raise InputError(f"{path}: {missing[0]!r} is missing")
    strategy, modules, arguments = info["strategy"], info["modules"], info["arguments"]
    if strategy not in STRATEGIES:
        raise InputError(f"{path}: unknown strategy {_shown(strategy)}; known: {', '.join(STRATEGIES)}")
    if not isinstance(modules, dict):
        raise InputError(f"{path}: 'modules' must be an object of module name -> [out, in]")
    if not modules:
        raise InputError(f"{path}: names no module")
    if not isinstance(arguments, dict):
        raise InputError(f"{path}: 'arguments' must be an object")
    dtype = info.get("dtype", "float64")
    if not isinstance(dtype, str) or dtype not in STORED:
        raise InputError(f"{path}: unknown dtype {_shown(dtype)}; known: {', '.join(STORED)}")
    return strategy, {_module_name(path, name): _module_shape(path, name, shape)
                      for name, shape in modules.items()}, arguments, dtype


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _module_name(path: Path, name: str) -> str:
    """A module name as torch writes it (dot-joined attribute names, "" for the model itself): never a
    path (no separator, no "..") nor a glob, since names become tensor keys and module patterns."""
    if not MODULE_NAME.fullmatch(name):
        raise InputError(f"{path}: module name {_shown(name)} is not a plain module name")
    return name


def _module_shape(path: Path, name: str, shape: Any) -> tuple[int, int]:
    if not (isinstance(shape, list) and len(shape) == 2
            and all(type(value) is int and value > 0 for value in shape)):
        raise InputError(f"{path}: module {_shown(name)} must have a shape [out, in] of positive integers, "
                         f"not {_shown(shape)}")
    return shape[0], shape[1]


def _check_model_file(path: Path, arguments: dict[str, Any], model_sha256: str) -> None:
    recorded = arguments.get("model_sha256")
    if not isinstance(recorded, str) or not SHA256.fullmatch(recorded):
        raise InputError(f"{path}: 'model_sha256' is not a sha256 of a model file")
    if recorded != model_sha256:
        raise InputError(f"the factors in {path.parent} were fitted on another model file (sha256 "
                         f"{recorded[:12]}..., this model {model_sha256[:12]}...); fit them again for this model")


def _check_symmetric(path: Path) -> Callable[[torch.Tensor], None]:
    def check(fisher: torch.Tensor) -> None:
        if not torch.equal(fisher, fisher.T):  # fit stores (F + F^T) / 2
            raise InputError(f"{path}: tensor 'exact/fisher' is not symmetric")
    return check


def _check_modules(path: Path, shapes: dict[str, tuple[int, int]], model: nn.Module) -> None:
    """The described modules are the model's own Linear / Conv2d modules, with their shapes, in order."""
    named = dict(model.named_modules())
    for name, shape in shapes.items():
        module = named.get(name)
        if not isinstance(module, SUPPORTED):
            raise InputError(f"{path}: module {name!r} is not a Linear or Conv2d of the model")
        if parameter_count(module) != shape:
            raise InputError(f"{path}: module {name!r} has shape {shape} in the factors but "
                             f"{parameter_count(module)} in the model")
    order = [name for name in named if name in shapes]
    if order != list(shapes):
        raise InputError(f"{path}: modules {list(shapes)} are not in the model's order {order}")


def _shown(value: Any) -> str:
    """A value read from a file, quoted and cut short for a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


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
        tensors = {key: value.detach().cpu().contiguous() for key, value in sums.items()}
        save_file({**tensors, "__done__": torch.tensor(done, device="cpu")}, str(tmp))
        os.replace(tmp, path)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # processes of one torchrun share the folder
    tmp.write_text(text)
    os.replace(tmp, path)
