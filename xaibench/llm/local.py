"""The ``transformers`` backend: a local Hugging Face causal LM directory, run offline on the CPU.

For the rankings that need no server and no key, and for tests: ``llm_model`` is a directory that
``save_pretrained`` wrote (model and tokenizer). Nothing is ever downloaded (``local_files_only``), so
a typo fails at once instead of fetching some other model. ``transformers`` is an optional extra and is
imported only when the backend is built: listing the backends must import neither it nor torch.

Each directory is loaded once per backend. Requests run one at a time: the model is shared, generating
is CPU-bound anyway, and a fast tokenizer used from two threads at once fails ("Already borrowed").
Sampling (temperature > 0) is seeded with the request's seed inside a forked RNG, so a rerun gives the
same reply and the caller's random state is left as it was. A reply stops where the model's context
ends (as ``max_tokens`` would stop it); a prompt that does not fit is an LLMError, not an IndexError.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xaibench.core.errors import InputError, first_line
from xaibench.llm.backends import BACKENDS, Backend, LLMError, Reply, Request, Settings

EXTRA = "the transformers backend needs the optional extra: pip install 'xaibench[local-llm]'"


@BACKENDS.register("transformers")
class TransformersBackend(Backend):
    description = "a local Hugging Face causal LM directory, offline (optional extra local-llm)"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        try:
            import transformers  # noqa: F401
        except ImportError:
            raise InputError(EXTRA) from None
        # Relative model directories resolve against this folder; naming it keeps cache keys apart.
        self._root = Path.cwd().resolve()
        self._models: dict[Path, tuple[Any, Any]] = {}
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @property
    def identity(self) -> str:
        return f"transformers {self._root}"

    def complete(self, request: Request) -> Reply:
        if request.max_tokens < 1:
            raise InputError(f"max_tokens must be at least 1, got {request.max_tokens}")
        tokenizer, model = self._load(request.model)
        import torch

        with self._run_lock, torch.no_grad():
            try:
                ids, mask = _prompt(tokenizer, request)
                room = _room(model, ids.shape[1], request)
                options: dict[str, Any] = {"max_new_tokens": min(request.max_tokens, room), "do_sample": False}
                if tokenizer.pad_token_id is None:
                    options["pad_token_id"] = tokenizer.eos_token_id
                if request.temperature > 0:
                    options.update(do_sample=True, temperature=request.temperature)
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(request.seed or 0)
                        out = model.generate(input_ids=ids, attention_mask=mask, **options)
                else:
                    out = model.generate(input_ids=ids, attention_mask=mask, **options)
            except LLMError:
                raise
            except Exception as err:  # noqa: BLE001 (a template refusing the messages, say)
                raise LLMError(f"{request.model}: {type(err).__name__}: {first_line(err)[:300]}") from None
            new = out[0, ids.shape[1]:]
            text = tokenizer.decode(new, skip_special_tokens=True)
        return Reply(text, int(ids.shape[1]), int(new.shape[0]))

    def _load(self, model: str) -> tuple[Any, Any]:
        """The tokenizer and model of a directory, loaded on first use."""
        path = (self._root / Path(model).expanduser()).resolve()
        with self._load_lock:
            if path in self._models:
                return self._models[path]
            if not path.is_dir():
                raise InputError(f"the transformers backend needs a local model directory: no directory {path}")
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:  # older transformers draw random weights before loading the saved ones: keep the RNG as it was
                with torch.random.fork_rng(devices=[]):
                    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                    loaded = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
            except Exception as err:  # noqa: BLE001 (OSError, ValueError, KeyError, SafetensorError...)
                raise InputError(f"cannot load a causal LM from {path}: {first_line(err)[:300]}") from None
            self._models[path] = (tokenizer, loaded.eval())
            return self._models[path]


def _room(model: Any, prompt_tokens: int, request: Request) -> int:
    """How many tokens fit after the prompt: past its context a model fails with an opaque IndexError."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(context, int):
        return request.max_tokens
    if prompt_tokens >= context:
        raise LLMError(f"{request.model}: a prompt of {prompt_tokens} tokens leaves no room in the model's "
                       f"context of {context}")
    return context - prompt_tokens


def _prompt(tokenizer: Any, request: Request) -> tuple[Any, Any]:
    """The prompt's (1, L) token ids and attention mask: the chat template, else "role: content" lines."""
    if getattr(tokenizer, "chat_template", None):
        # transformers 5 returns a BatchEncoding by default, 4.x the bare ids: ask for the dict, accept both.
        encoded = tokenizer.apply_chat_template(request.wire_messages(), add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
    else:
        text = "\n".join(f"{role}: {content}" for role, content in request.messages) + "\nassistant:"
        encoded = tokenizer(text, return_tensors="pt")
    if isinstance(encoded, Mapping):
        ids = encoded["input_ids"]
        mask = encoded.get("attention_mask")
    else:
        ids, mask = encoded, None
    if mask is None:
        import torch

        mask = torch.ones_like(ids)
    return ids, mask
