"""The xaibench checkpoint: architecture reference, weights and metadata in one weights-only file.

A checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(weights_only=True)``::

    {"format": "xaibench-checkpoint", "version": 1, "arch": "module:factory", "arch_kwargs": {...},
     "state_dict": {...}, "meta": ModelMeta.to_dict()}

and, for a text model, ``"tokenizer"``: its Hugging Face ``tokenizers.Tokenizer`` as JSON text
(``Tokenizer.to_str()``), absent otherwise.

Resolving ``"module:factory"`` imports ``module`` and calls ``factory(**arch_kwargs)``: done for a name
found inside a file, that is code execution chosen by the file ("os:system"). So a file may only name
the factories registered in ``ARCHITECTURES``; anything else needs ``trusted=True`` (``--trust-model``,
or an architecture the user passed with ``--arch``).
"""

from __future__ import annotations

import functools
import math
import os
import reprlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import InputError, UntrustedModelError, first_line
from xaibench.core.lazy import lazy_import
from xaibench.models.archs import ARCHITECTURES, ARCHS_MODULE, reference
from xaibench.models.meta import MODALITIES, ModelMeta
from xaibench.models.user_code import import_user_module

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = lazy_import("torch")

CHECKPOINT_FORMAT = "xaibench-checkpoint"
CHECKPOINT_VERSION = 1
_PLAIN = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint dict (see the module docstring)."""

    arch: str
    arch_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    meta: ModelMeta
    tokenizer: str | None = None  # a tokenizers.Tokenizer as JSON, for text models


def is_checkpoint(obj: object) -> bool:
    """Whether a weights-only-loaded object carries the xaibench checkpoint tag."""
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def save_checkpoint(
    path: str | Path, module: nn.Module, *, arch: str, arch_kwargs: dict[str, Any], meta: ModelMeta,
    tokenizer: str | None = None,
) -> None:
    """Write ``module``'s weights as an xaibench checkpoint, atomically (temp file, then rename).

    Args:
        path: destination file.
        module: the model; only its ``state_dict`` is stored.
        arch: a registered architecture name (stored as ``"xaibench.models.archs:<name>"``) or
            ``"module:factory"``.
        arch_kwargs: keyword arguments of the factory: plain values (numbers, strings, lists, dicts).
        meta: the model's metadata.
        tokenizer: a text model's tokenizer, ``tokenizers.Tokenizer.to_str()``; None stores none.

    Raises:
        UnknownNameError: ``arch`` is neither registered nor ``"module:factory"``.
        TypeError: ``arch_kwargs`` holds a value that a weights-only load cannot read back, or
            ``tokenizer`` is not a string.
    """
    ref = reference(arch) if arch in ARCHITECTURES else arch
    if ":" not in ref:
        ARCHITECTURES.get(ref)  # raises with a suggestion
    _check_plain(arch_kwargs)
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise TypeError(f"tokenizer must be the tokenizer's JSON string, got a {type(tokenizer).__name__}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": ref,
        "arch_kwargs": dict(arch_kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "meta": meta.to_dict(),
    }
    if tokenizer is not None:
        payload["tokenizer"] = tokenizer
    path = Path(path)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with staging.open("xb") as handle:
            torch.save(payload, handle)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _check_plain(value: object) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_plain(key)
            _check_plain(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item)
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"arch_kwargs must hold plain values, got a {type(value).__name__}")


def parse_checkpoint(obj: Mapping[str, Any], source: str) -> Checkpoint:
    """Validate a tagged checkpoint dict read from ``source``.

    Raises:
        InputError: an unsupported version or a missing / malformed entry (metadata included: it
            becomes tensors, shapes and names later).
    """
    version = obj.get("version")
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
        raise InputError(f"{source}: checkpoint version {version!r} is not supported "
                         f"(this xaibench reads version {CHECKPOINT_VERSION})")
    arch, kwargs = obj.get("arch"), obj.get("arch_kwargs") or {}
    state_dict, meta = obj.get("state_dict"), obj.get("meta") or {}
    if not isinstance(arch, str) or not arch:
        raise InputError(f"{source}: checkpoint names no architecture ('arch')")
    if not isinstance(kwargs, Mapping) or not isinstance(meta, Mapping):
        raise InputError(f"{source}: checkpoint 'arch_kwargs' and 'meta' must be dicts")
    if not is_state_dict(state_dict):
        raise InputError(f"{source}: checkpoint 'state_dict' is not a dict of tensors")
    for key, (valid, what) in _META_RULES.items():
        if meta.get(key) is not None and not valid(meta[key]):
            raise InputError(f"{source}: checkpoint meta {key!r} must be {what}, "
                             f"got {reprlib.repr(meta[key])}")
    tokenizer = obj.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise InputError(f"{source}: checkpoint 'tokenizer' must be a tokenizer's JSON text, "
                         f"got a {type(tokenizer).__name__}")
    return Checkpoint(arch, dict(kwargs), dict(state_dict), ModelMeta.from_dict(dict(meta)), tokenizer)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: object) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_number(v) for v in value)


def _texts(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _shape(value: object) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


#: what each ModelMeta field of a checkpoint must hold (when not None), and how to say it
_META_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "modality": (lambda v: isinstance(v, str) and v in MODALITIES, f"one of {', '.join(MODALITIES)}"),
    "input_shape": (_shape, "a list of positive integers"),
    "class_names": (_texts, "a list of texts"),
    "feature_names": (_texts, "a list of texts"),
    "value_range": (lambda v: _numbers(v) and len(v) == 2, "two finite numbers (low, high)"),
    "mean": (_numbers, "a list of finite numbers"),
    "std": (lambda v: _numbers(v) and all(x != 0 for x in v), "a list of finite non-zero numbers"),
    "dataset": (lambda v: isinstance(v, str), "a text"),
}


def is_state_dict(obj: object) -> bool:
    """A non-empty mapping of names to tensors."""
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def resolve_architecture(ref: str, *, trusted: bool, source: str) -> Callable[..., nn.Module]:
    """The factory named by ``ref``: a registered name, ``"xaibench.models.archs:<name>"`` or, only
    when ``trusted``, any ``"module:factory"`` or ``"path/to/file.py:factory"`` (``factory`` may be dotted:
    ``Class.build``). A module is looked up from the current folder first, as ``python -m`` does (see
    ``xaibench.models.user_code``).

    Raises:
        UnknownNameError: a bare name that is not registered (with a suggestion).
        UntrustedModelError: an unregistered ``"module:factory"`` while not trusted.
        InputError: the module cannot be imported or has no such callable.
    """
    module_name, sep, attr = ref.rpartition(":")  # rpartition: a file path may hold a colon
    if not sep:
        return ARCHITECTURES.get(ref)
    if module_name == ARCHS_MODULE and attr in ARCHITECTURES:
        return ARCHITECTURES.get(attr)
    if not trusted:
        raise UntrustedModelError(
            f"{source} names architecture {ref!r}, which is not built into xaibench; building it "
            "would import and run that code; pass --trust-model only for files you trust"
        )
    if not module_name or not attr:
        raise InputError(f"architecture {ref!r} must be NAME, module:factory or path/to/file.py:factory")
    try:
        module = import_user_module(module_name)
    except InputError as error:
        raise InputError(f"architecture {ref!r}: {error}") from error
    try:
        factory = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise InputError(f"module {module_name!r} has no {attr!r} (architecture {ref!r})") from None
    if not callable(factory):
        raise InputError(f"architecture {ref!r} is not callable")
    return factory


def build_model(
    ref: str, kwargs: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], *, trusted: bool,
    source: str,
) -> nn.Module:
    """Build the architecture ``ref`` with ``kwargs`` and load ``state_dict`` into it (strictly).

    The architecture is first built on the meta device (shapes, no memory), so that arguments a file
    chose (``hidden=10**12``) are measured against its weights before anything is allocated.

    Raises:
        InputError: the factory rejects the arguments, returns no module, or the weights do not fit.
        UntrustedModelError: see ``resolve_architecture``.
    """
    factory = resolve_architecture(ref, trusted=trusted, source=source)
    for name, tensor in state_dict.items():
        if tensor.layout != torch.strided or tensor.is_quantized:
            kind = "quantized" if tensor.is_quantized else str(tensor.layout).removeprefix("torch.")
            raise InputError(f"{source}: weight {name!r} is a {kind} tensor; store dense tensors")
    builtin = any(factory is ARCHITECTURES.get(name) for name in ARCHITECTURES.list())
    for on_meta in (True, False):  # xaibench's own architectures all build on the meta device
        module = _construct(factory, ref, kwargs, source, on_meta=on_meta, fallible=on_meta and not builtin)
        problems = "" if module is None else _mismatches(module.state_dict(), state_dict)
        if problems:
            raise InputError(f"{source}: the weights do not fit architecture {ref!r} ({problems})")
    assert module is not None  # the real build raises rather than return None
    module.load_state_dict(state_dict)
    return module


def _construct(
    factory: Callable[..., nn.Module], ref: str, kwargs: Mapping[str, Any], source: str, *, on_meta: bool,
    fallible: bool,
) -> nn.Module | None:
    """``factory(**kwargs)``, on the meta device when ``on_meta``. A ``fallible`` build gives None when
    it fails (a user's factory may need real values there): the real build then decides."""
    try:
        with torch.device("meta" if on_meta else "cpu"):  # explicit: weights load on the CPU first
            module = factory(**kwargs)
    except Exception as error:  # the factory may be anyone's code: any failure is reported
        if fallible:
            return None
        if isinstance(error, TypeError):
            raise InputError(f"{source}: architecture {ref!r} does not accept {reprlib.repr(dict(kwargs))}: "
                             f"{first_line(error)}") from error
        raise InputError(f"{source}: architecture {ref!r} cannot be built with {reprlib.repr(dict(kwargs))}: "
                         f"{first_line(error)}") from error
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"{source}: architecture {ref!r} returned a {type(module).__name__}, not a module")
    return module


def _mismatches(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    """One line naming missing keys, unexpected keys and shape mismatches ('' when they fit)."""

    def names(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} is {tuple(given[k].shape)} in the file but {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in given and given[k].shape != v.shape]
    # complex into real: torch would drop the imaginary part with a warning
    shapes += [f"{k} is {given[k].dtype} in the file but {v.dtype} in the model"
               for k, v in expected.items() if k in given and given[k].is_complex() != v.is_complex()]
    parts = ([f"missing {names(missing)}"] if missing else []) + (
        [f"unexpected {names(unexpected)}"] if unexpected else []) + shapes[:2]
    return "; ".join(parts)
