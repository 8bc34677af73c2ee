"""Loading model files safely: format detection by content, one registered loader per format.

Safe by default means that loading a file without ``trust_model`` never runs code the file chooses:

- "checkpoint", "state_dict": pickles read with ``torch.load(weights_only=True)``, whose unpickler only
  builds tensors and plain containers; a checkpoint may only name xaibench's own architectures.
- "safetensors": a JSON header and raw tensor bytes; no code at all.
- "pickle" (a full pickled ``nn.Module``), "torchscript" and "export": PyTorch documents that
  ``torch.load(weights_only=False)``, ``torch.jit.load`` and ``torch.export.load`` can execute
  arbitrary code from a crafted file, so these need ``trust_model=True``.

Detection never unpickles untrusted content: zip archives are told apart by their member names
(TorchScript has ``code/``, a .pt2 program ``archive_format``), safetensors by its header, and a pickle
that the weights-only unpickler refuses is inspected with ``pickletools`` (which only parses opcodes).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaibench.core.devices import module_device, resolve_device
from xaibench.core.errors import InputError, UntrustedModelError
from xaibench.core.lazy import lazy_import
from xaibench.core.ownership import file_digest
from xaibench.core.registry import Registry
from xaibench.core.text import printable
from xaibench.models.archs import ARCHITECTURES
from xaibench.models.checkpoint import (
    build_model,
    is_checkpoint,
    is_state_dict,
    parse_checkpoint,
)
from xaibench.models.meta import ModelMeta
from xaibench.models.user_code import load_pickled

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = lazy_import("torch")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run, with what is known about it.

    Attributes:
        module: the model in eval mode (an exported program keeps the mode it was exported in).
        meta: metadata from the file (checkpoints) or all None (other formats).
        format: the ``MODEL_FORMATS`` name of the loader that read it.
        path: the file it came from, printable (``xaibench.core.text.printable``): a name that is not
            UTF-8 is shown, recorded and drawn with its odd bytes as ``\\xNN``.
        sha256: hex digest of the file's bytes.
    """

    module: nn.Module
    meta: ModelMeta
    format: str
    path: str
    sha256: str

    @property
    def device(self) -> torch.device:
        """Where the model's weights live (the CPU for a model without any)."""
        return module_device(self.module)


@dataclass(frozen=True)
class LoadRequest:
    """What the caller asked for; ``arch`` and ``arch_kwargs`` come from the user: trusted."""

    path: Path
    trust_model: bool
    arch: str | None
    arch_kwargs: dict[str, Any] | None
    embedding_layer: str | None = None


Loader = Callable[[LoadRequest, Any], "tuple[nn.Module, ModelMeta]"]
MODEL_FORMATS: Registry[Loader] = Registry("model format")


@dataclass(frozen=True)
class ModelSource:
    """A model file and what loading it may do: what every command that loads a model is given."""

    path: str
    trust_model: bool = False
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    embedding_layer: str | None = None  # a text model's token-embedding layer, when not found by itself
    tokenizer: str | None = None  # a tokenizer.json that makes a model over token ids a text model

    @property
    def stem(self) -> str:
        """The file name without its suffix, printable: default output names are made of it."""
        return printable(Path(self.path).stem)

    def load(self, device: torch.device | str | None = None) -> LoadedModel:
        """The model, moved to ``device`` when given."""
        return load_model(self.path, trust_model=self.trust_model, arch=self.arch, arch_kwargs=self.arch_kwargs,
                          device=device, embedding_layer=self.embedding_layer, tokenizer=self.tokenizer)


def load_model(
    path: str | Path, *, trust_model: bool = False, arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None, device: torch.device | str | None = None,
    embedding_layer: str | None = None, tokenizer: str | Path | None = None,
) -> LoadedModel:
    """Load a model file of any supported format (see the module docstring).

    Args:
        path: the model file.
        trust_model: allow formats that execute code from the file, and architectures outside
            xaibench named inside a checkpoint.
        arch: architecture to build (required for bare weights): a registered name or
            ``"module:factory"``; overrides a checkpoint's own.
        arch_kwargs: factory arguments; default: the checkpoint's, else none.
        device: where the model is moved after loading on the CPU (default: it stays there); a text is
            what ``--device`` takes (auto, cpu, cuda, cuda:N, mps), see ``xaibench.core.devices``.
        embedding_layer: a text model's token-embedding layer by name (default: found by itself).
        tokenizer: a Hugging Face ``tokenizer.json`` for a model over token ids that carries none (a
            state_dict, safetensors or pickled module): the model is then a text model.

    A directory is read as a Hugging Face sequence classifier (``xaibench.models.huggingface``); a
    checkpoint that carries a tokenizer is a text model. Text models come back wrapped to take token
    embeddings (``xaibench.models.text``).

    Raises:
        InputError: missing, empty, corrupt or unrecognised file; bare weights without ``arch``;
            weights that do not fit the architecture.
        UntrustedModelError: a format or architecture that would run code, without ``trust_model``.
    """
    from xaibench.models.huggingface import (
        directory_digest,
        is_model_dir,
        load_directory,
    )

    if is_model_dir(Path(path)):
        folder = Path(path)
        if tokenizer is not None or arch is not None:
            raise InputError(f"{printable(folder)} is a Hugging Face directory: its config.json and tokenizer.json "
                             "say what it is; leave out --arch and --tokenizer")
        module, meta = load_directory(folder, trust_model=trust_model, layer=embedding_layer)
        name, digest = "huggingface", directory_digest(folder)
    else:
        file = _existing_file(Path(path))
        name, payload = _detect(file)
        loader = MODEL_FORMATS.get(name)
        if not loader.safe and not trust_model:
            raise UntrustedModelError(f"{file} {loader.risk}; loading it can run code from the file; "
                                      "pass --trust-model only for files you trust")
        module, meta = loader(LoadRequest(file, trust_model, arch, arch_kwargs, embedding_layer), payload)
        digest = file_digest(file)
        if tokenizer is not None:
            module, meta = _with_tokenizer(module, meta, Path(tokenizer), embedding_layer)
    if embedding_layer is not None and meta.modality != "text":
        raise InputError(f"--layer {embedding_layer} names a token-embedding layer, but {printable(path)} is not a "
                         "text model (and the method takes no layer)")
    if device is not None:
        module = module.to(resolve_device(device) if isinstance(device, str) else device)
    return LoadedModel(module.eval(), meta, name, printable(path), digest)


def _with_tokenizer(module: nn.Module, meta: ModelMeta, path: Path,
                    layer: str | None) -> tuple[nn.Module, ModelMeta]:
    """A model over token ids wrapped as a text model with the tokenizer in ``path``."""
    from tokenizers import Tokenizer

    from xaibench.models.text import TextTokenizer, text_classifier

    if getattr(module, "input_modality", None) == "text":
        raise InputError("the model carries its own tokenizer; leave out --tokenizer")
    if not path.is_file():
        raise InputError(f"tokenizer file {path} does not exist")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 (tokenizers raises a plain Exception for a bad file)
        raise InputError(f"{path} is not a tokenizer file (a Hugging Face tokenizer.json): {error}") from None
    return text_classifier(module, TextTokenizer(tokenizer), layer=layer), meta.merged(modality="text")


def _existing_file(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"model file {path} does not exist")
    if not path.is_file():
        raise InputError(f"{path} is not a model file (a directory or a special file)")
    if path.stat().st_size == 0:
        raise InputError(f"model file {path} is empty")
    return path


def _unreadable(path: Path, what: str = "a model file") -> InputError:
    return InputError(f"{path} is not {what} xaibench can read (corrupt, truncated or another format)")


def _detect(path: Path) -> tuple[str, Any]:
    """(format name, payload): the weights-only-loaded object for pickles, else None."""
    if zipfile.is_zipfile(path):
        kind = _zip_kind(path)
        if kind != "torch.save":
            return kind, None
    elif _has_safetensors_header(path):
        return "safetensors", None
    elif path.suffix in (".safetensors", ".pt2"):
        raise _unreadable(path, f"a {path.suffix} file")
    return _classify_torch_save(path)


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.split("/", 1)[-1] for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError) as error:
        raise _unreadable(path) from error
    if "constants.pkl" in members and any(m.startswith("code/") for m in members):
        return "torchscript"
    if "archive_format" in members or "serialized_exported_program.json" in members:
        return "export"
    if "data.pkl" in members:
        return "torch.save"
    raise _unreadable(path, "a PyTorch archive")


def _has_safetensors_header(path: Path) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON object."""
    with path.open("rb") as handle:
        head = handle.read(9)
    size = path.stat().st_size
    return len(head) == 9 and 0 < int.from_bytes(head[:8], "little") <= size - 8 and head[8:] == b"{"


def _classify_torch_save(path: Path) -> tuple[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a probe: torch warns about pickle protocols it may refuse
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if _pickle_imports_code(path):
            return "pickle", None
        raise _unreadable(path) from error
    except Exception as error:  # torch raises RuntimeError, KeyError, EOFError... for corrupt files
        raise _unreadable(path) from error
    if is_checkpoint(obj):
        return "checkpoint", obj
    if is_state_dict(obj):
        return "state_dict", obj
    raise InputError(f"{path} holds a Python {type(obj).__name__!r}, not a model: expected an xaibench "
                     "checkpoint, a state_dict (with --arch), TorchScript, .pt2 or safetensors")


def _pickle_imports_code(path: Path) -> bool:
    """Whether the file's pickle stream(s) parse and reference importable names (classes, functions).

    That is why a well-formed pickle fails the weights-only unpickler; random bytes fail to parse.
    A legacy ``torch.save`` file is several pickles in a row, a zip one holds ``data.pkl``.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.split("/", 1)[-1] == "data.pkl")
            stream = io.BytesIO(archive.read(name))
    else:
        stream = io.BytesIO(path.read_bytes())
    imports = {"GLOBAL", "STACK_GLOBAL", "INST"}
    while stream.tell() < len(stream.getbuffer()):
        try:  # parse a whole pickle, up to STOP, before trusting what it contains
            opcodes = {op.name for op, _, _ in pickletools.genops(stream)}
        except ValueError:  # not (or no longer) a pickle: raw storage bytes or garbage
            return False
        if opcodes & imports:
            return True
    return False


def _require_arch(request: LoadRequest, what: str) -> str:
    if request.arch is None:
        known = ", ".join(ARCHITECTURES.list())
        raise InputError(f"{request.path} holds {what} without an architecture; pass --arch NAME "
                         f"(one of: {known}) or --arch module:factory")
    return request.arch


@MODEL_FORMATS.register("checkpoint", safe=True, risk="", extensions=(".pt", ".pth"),
                        description="xaibench checkpoint: architecture, weights, metadata")
def _load_checkpoint(request: LoadRequest, payload: Any) -> tuple[nn.Module, ModelMeta]:
    checkpoint = parse_checkpoint(payload, str(request.path))
    kwargs = checkpoint.arch_kwargs if request.arch_kwargs is None else request.arch_kwargs
    module = build_model(request.arch or checkpoint.arch, kwargs, checkpoint.state_dict,
                         trusted=request.trust_model or request.arch is not None,
                         source=str(request.path))
    if checkpoint.tokenizer is not None:  # a text model: explained through its token embeddings
        from tokenizers import Tokenizer

        from xaibench.models.text import TextTokenizer, text_classifier

        try:
            tokenizer = Tokenizer.from_str(checkpoint.tokenizer)
        except Exception as error:  # tokenizers raises a plain Exception for bad JSON
            raise _unreadable(request.path, "a checkpoint with a readable tokenizer") from error
        module = text_classifier(module, TextTokenizer(tokenizer), layer=request.embedding_layer)
        meta = checkpoint.meta.merged(modality="text")
    return module, checkpoint.meta if checkpoint.tokenizer is None else meta


@MODEL_FORMATS.register("state_dict", safe=True, risk="", extensions=(".pt", ".pth"),
                        description="torch.save'd state_dict; needs --arch")
def _load_state_dict(request: LoadRequest, payload: Any) -> tuple[nn.Module, ModelMeta]:
    arch = _require_arch(request, "a state_dict")
    module = build_model(arch, request.arch_kwargs or {}, payload, trusted=True,
                         source=str(request.path))
    return module, ModelMeta()


@MODEL_FORMATS.register("safetensors", safe=True, risk="", extensions=(".safetensors",),
                        description="safetensors weights; needs --arch")
def _load_safetensors(request: LoadRequest, payload: Any) -> tuple[nn.Module, ModelMeta]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    arch = _require_arch(request, "safetensors weights")
    try:
        weights = load_file(request.path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise _unreadable(request.path, "a safetensors file") from error
    module = build_model(arch, request.arch_kwargs or {}, weights, trusted=True,
                         source=str(request.path))
    return module, ModelMeta()


@MODEL_FORMATS.register("torchscript", safe=False, risk="is a TorchScript archive",
                        extensions=(".pt", ".ts"), description="TorchScript archive (torch.jit.save)")
def _load_torchscript(request: LoadRequest, payload: Any) -> tuple[nn.Module, ModelMeta]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
            module = torch.jit.load(str(request.path), map_location="cpu")
    except RuntimeError as error:
        raise _unreadable(request.path, "a TorchScript archive") from error
    return module, ModelMeta()


@MODEL_FORMATS.register("export", safe=False, risk="is a torch.export program",
                        extensions=(".pt2",), description="torch.export program (torch.export.save)")
def _load_export(request: LoadRequest, payload: Any) -> tuple[nn.Module, ModelMeta]:
    from xaibench.models.exported import exported_module

    try:
        program = torch.export.load(request.path)
    except Exception as error:  # torch raises many types (RuntimeError, KeyError, AssertionError)
        raise _unreadable(request.path, "a torch.export program") from error
    return exported_module(program), ModelMeta()


@MODEL_FORMATS.register("pickle", safe=False, risk="is a pickled Python object",
                        extensions=(".pt", ".pth", ".pkl"),
                        description="pickled nn.Module (torch.save(model))")
def _load_pickle(request: LoadRequest, payload: Any) -> tuple[nn.Module, ModelMeta]:
    try:  # classes the pickle names are looked up from the current folder first, as `python -m` does
        obj = load_pickled(request.path)
    except InputError:  # a class the pickle needs is missing: named, not called corrupt
        raise
    except Exception as error:  # trusted, so anything the file does may fail
        raise _unreadable(request.path) from error
    if isinstance(obj, torch.nn.Module):
        return obj, ModelMeta()
    if is_checkpoint(obj):
        return _load_checkpoint(request, obj)
    if is_state_dict(obj):
        return _load_state_dict(request, obj)
    raise InputError(f"{request.path} holds a Python {type(obj).__name__!r}, not a model")
