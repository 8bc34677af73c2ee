"""Hugging Face sequence-classification models from a local directory, offline and safe by default.

A directory with ``config.json``, the weights as safetensors (``model.safetensors`` or shards with
``model.safetensors.index.json``) and ``tokenizer.json`` loads with ``transformers``'
``AutoModelForSequenceClassification`` (an optional dependency: ``pip install 'xaibench[text]'``), the
tokenizer with the ``tokenizers`` library. Nothing is downloaded: the hub is switched off before
transformers is imported and every call passes ``local_files_only``. Code is never run from the
directory without ``trust_model``: ``trust_remote_code`` follows it, a config that asks for custom code
(``auto_map``) is refused without it, and pickled ``pytorch_model.bin`` weights are read only with it.
Attention is computed eagerly, so the attention methods can read its probabilities.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import InputError, UntrustedModelError, first_line
from xaibench.models.meta import ModelMeta

if TYPE_CHECKING:
    from torch import nn

REQUIRED = ("config.json", "tokenizer.json")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_READ = (*REQUIRED, *SAFE_WEIGHTS, *PICKLED_WEIGHTS, "tokenizer_config.json", "special_tokens_map.json")


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` is a directory that holds a model config."""
    return path.is_dir() and (path / "config.json").is_file()


def directory_digest(path: Path) -> str:
    """sha256 over the names and bytes of the files a model directory is read from, in name order."""
    digest = hashlib.sha256()
    for name in sorted(_READ):
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0")
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    for shard in sorted([*path.glob("model-*.safetensors"), *path.glob("pytorch_model-*.bin")]):
        digest.update(shard.name.encode() + b"\0")
        with shard.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_directory(path: Path, *, trust_model: bool, layer: str | None = None) -> tuple[nn.Module, ModelMeta]:
    """The wrapped classifier (``xaibench.models.text.TextClassifier``) and its metadata.

    Raises:
        InputError: a missing file, transformers not installed, or a directory transformers cannot read.
        UntrustedModelError: custom code or pickled weights without ``trust_model``.
    """
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise InputError(f"{path} is not a Hugging Face model directory xaibench can read: it has no "
                         f"{' or '.join(missing)}")
    config = _read_config(path)
    if config.get("auto_map") and not trust_model:
        raise UntrustedModelError(f"{path} asks for custom model code (auto_map in config.json); pass "
                                  "--trust-model only for directories you trust")
    safe = any((path / name).is_file() for name in SAFE_WEIGHTS)
    if not safe and not trust_model:
        pickled = any((path / name).is_file() for name in PICKLED_WEIGHTS)
        raise (UntrustedModelError(f"{path} holds pickled weights (pytorch_model.bin), which can run code when "
                                   "loaded; pass --trust-model only for files you trust, or save as safetensors")
               if pickled else InputError(f"{path} has no model.safetensors weights"))
    model = _from_pretrained(path, trust_model, safe)
    from xaibench.models.text import TextTokenizer, text_classifier

    tokenizer = TextTokenizer(_tokenizer(path), _declared_mask(path))
    wrapped = text_classifier(model, tokenizer, huggingface=True, layer=layer)
    labels = getattr(model.config, "id2label", None) or {}
    names = tuple(str(labels.get(i, labels.get(str(i), i))) for i in range(model.config.num_labels))
    return wrapped, ModelMeta(modality="text", class_names=names)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path / 'config.json'} is not valid JSON: {first_line(error)}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path / 'config.json'} does not hold a JSON object")
    return config


def _from_pretrained(path: Path, trust_model: bool, safe: bool) -> nn.Module:
    os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers reads its settings: never reach the hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import transformers
    except ImportError:
        raise InputError("reading a Hugging Face model directory needs transformers: "
                         "pip install 'xaibench[text]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # loading shows a bar per file; the CLI draws its own
    try:
        model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_model, use_safetensors=safe,
            attn_implementation="eager", output_loading_info=True)
    except Exception as error:  # noqa: BLE001 (transformers raises many types for a directory it cannot read)
        raise InputError(f"transformers cannot load {path} as a sequence classifier: {first_line(error)}") from None
    untrained = [*info.get("missing_keys", ()), *(str(k[0]) if isinstance(k, tuple) else str(k)
                                                  for k in info.get("mismatched_keys", ()))]
    if untrained:  # transformers would fill them with random values, which would change on every load
        shown = ", ".join(sorted(untrained)[:4]) + (f" and {len(untrained) - 4} more" if len(untrained) > 4 else "")
        raise InputError(f"{path} has no trained weights for {shown}: not a fine-tuned sequence classifier")
    return model.float().eval()


def _tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as error:  # noqa: BLE001 (tokenizers raises a plain Exception for a bad file)
        raise InputError(f"{path / 'tokenizer.json'} is not a tokenizer file: {first_line(error)}") from None


def _declared_mask(path: Path) -> str | None:
    """The mask token tokenizer_config.json names, when it names one as a plain string."""
    file = path / "tokenizer_config.json"
    try:
        declared = json.loads(file.read_text(encoding="utf-8")).get("mask_token") if file.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return declared if isinstance(declared, str) and declared else None
