"""Text classifiers seen through their token embeddings: what xaibench explains for modality "text".

Gradients do not flow to integer token ids, so every method works in the space of the model's input
embedding layer, as captum's LayerIntegratedGradients does. ``TextClassifier`` wraps a classifier over
token ids and takes instead the embeddings of a text's *content* tokens, shaped (N, D, L) like a
sequence with D channels, so the sequence machinery (feature groups along L across all channels,
chunked passes) applies unchanged. A method's (N, D, L) attribution summed over D is one score per token
(``token_scores``; a map copied to every channel, as perturbation and attention methods give, counts once).

Three choices make the space behave like a token space:

- **Origin at the substrate token.** The embeddings are stored relative to the embedding of one
  *substrate* token, the mask token where the tokenizer has one, else unk, else pad: the zero vector is
  that token. A zero baseline or a zero substrate therefore means "the token is masked", perturbation
  methods and metrics that write zeros replace tokens by it, and integrated gradients from zero equals
  LayerIntegratedGradients with the substrate token's ids as baseline. Gradients are unchanged by the
  shift.
- **Special tokens outside the explained space.** The tokenizer's special tokens ([CLS], [SEP], <s>...)
  are added around the content by the wrapper with their real embeddings, so they never get relevance
  and no method or metric can remove them.
- **No padding.** A batch holds texts of one token length; the model attends to every position, so no
  attention mask is needed and none can be mismatched with the rows a method builds.

The wrapper runs the model on ids (the special tokens, and the substrate token at content positions)
with a forward hook on the embedding layer that swaps the layer's content output for the given
embeddings: the rest of the model (position embeddings, layer norms, dropout) runs as it would on ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import IncompatibleError, InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import tokenizers
    import torch
    from torch import nn
else:
    torch = lazy_import("torch")
    nn = lazy_import("torch.nn")

#: substrate candidates in order of preference: a mask token, else unknown, else padding
SUBSTRATE_TOKENS = ("[MASK]", "<mask>", "[UNK]", "<unk>", "[PAD]", "<pad>")
#: Hugging Face model types whose position ids start after the padding id (RoBERTa's numbering)
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                              "roberta-prelayernorm", "xmod", "longformer", "luke", "mpnet"})


@dataclass(frozen=True)
class Encoded:
    """One text as the model reads it: content ids, their tokens and character spans, and the special
    tokens the tokenizer's template puts before and after the content."""

    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]


class TextTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` read for its content tokens and special-token layout.

    Args:
        tokenizer: the tokenizer (its truncation and padding are switched off: xaibench never cuts a
            text short silently).
        substrate: the token that removed tokens become; None picks the first of ``SUBSTRATE_TOKENS``
            in the vocabulary.

    Raises:
        InputError: the substrate is not in the vocabulary, or none of the candidates is.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer, substrate: str | None = None) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        candidates = (substrate,) if substrate else SUBSTRATE_TOKENS
        found = [token for token in candidates if tokenizer.token_to_id(token) is not None]
        if not found:
            raise InputError(f"the tokenizer has none of the tokens {', '.join(candidates)}; xaibench replaces "
                             "removed tokens by a mask, unknown or padding token")
        self.substrate = found[0]
        self.substrate_id = int(tokenizer.token_to_id(self.substrate))

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Each text split into its special prefix, content and special suffix.

        Raises:
            InputError: a text with no content token, or a template that puts special tokens between
                content tokens (sentence pairs), which xaibench does not explain.
        """
        return [self._split(text, encoding) for text, encoding in
                zip(texts, self.tokenizer.encode_batch(list(texts)), strict=True)]

    def _split(self, text: str, encoding: Any) -> Encoded:
        special = list(encoding.special_tokens_mask)
        content = [i for i, flag in enumerate(special) if not flag]
        if not content:
            raise InputError(f"the text {text[:40]!r} has no token besides special tokens")
        first, last = content[0], content[-1] + 1
        if len(content) != last - first:
            raise InputError("the tokenizer puts special tokens inside the text (a sentence-pair template); "
                             "xaibench explains single texts")
        ids = list(encoding.ids)
        return Encoded(tuple(ids[first:last]), tuple(encoding.tokens[first:last]),
                       tuple(tuple(span) for span in encoding.offsets[first:last]),
                       tuple(ids[:first]), tuple(ids[last:]))


class TextClassifier(nn.Module):
    """A classifier over token ids, taking content-token embeddings (N, D, L) relative to the substrate
    token's embedding (see the module docstring).

    Args:
        model: the classifier; called as ``model(ids)`` or, for Hugging Face models, ``model(input_ids=ids)``
            whose ``.logits`` are used.
        embedding: the model's token-embedding layer (an ``nn.Embedding`` the model calls once per pass).
        tokenizer: the model's tokenizer.
        prefix, suffix: the special token ids around the content.
        huggingface: whether ``model`` is a Hugging Face ``PreTrainedModel``.
    """

    input_modality = "text"

    def __init__(self, model: nn.Module, embedding: nn.Embedding, tokenizer: TextTokenizer,
                 prefix: Sequence[int], suffix: Sequence[int], huggingface: bool = False) -> None:
        super().__init__()
        if tokenizer.vocab_size > embedding.num_embeddings:
            raise InputError(f"the tokenizer has {tokenizer.vocab_size} tokens but the embedding layer only "
                             f"{embedding.num_embeddings}; they do not belong together")
        self.model = model
        self.embedding = embedding
        self.tokenizer = tokenizer
        self.huggingface = huggingface
        self.register_buffer("prefix", torch.tensor(list(prefix), dtype=torch.long), persistent=False)
        self.register_buffer("suffix", torch.tensor(list(suffix), dtype=torch.long), persistent=False)
        self._attention: list[Any] | None = None  # filled while capturing a Hugging Face model's attention
        self.fill_id = self._fill_id()

    def _fill_id(self) -> int:
        """The id the model is given at content positions, whose embeddings the hook replaces: the
        substrate, unless it is the model's padding token, which models read from the ids (RoBERTa's
        positions, the last-token pooling of decoder classifiers); then the first ordinary token."""
        config = getattr(self.model, "config", None)
        padding = getattr(config, "pad_token_id", None) if config is not None else None
        if self.tokenizer.substrate_id != padding:
            return self.tokenizer.substrate_id
        return int(self.substitutes()[0])

    @property
    def origin(self) -> torch.Tensor:
        """The substrate token's embedding (D,) as the layer outputs it (some layers scale their weights):
        the zero of the explained space."""
        device = self.embedding.weight.device
        with torch.no_grad():  # forward itself, not the call: hooks others put on the layer see model passes only
            return self.embedding.forward(torch.tensor([self.tokenizer.substrate_id], device=device))[0]

    @property
    def special_counts(self) -> tuple[int, int]:
        """How many special tokens stand before and after the content."""
        return self.prefix.numel(), self.suffix.numel()

    @property
    def max_tokens(self) -> int | None:
        """The most tokens the model takes, special tokens included, where it says (None: unknown).
        RoBERTa-style models number positions from the padding id + 1, so they take that many fewer."""
        config = getattr(self.model, "config", None)
        limit = getattr(config, "max_position_embeddings", None) if config is not None else None
        if limit and getattr(config, "model_type", None) in OFFSET_POSITIONS:
            limit -= (getattr(config, "pad_token_id", None) or 0) + 1
        return limit or getattr(self.model, "max_length", None)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Content ids (N, L) -> the explained inputs (N, D, L): embeddings minus the origin."""
        origin = self.origin
        with torch.no_grad():
            vectors = self.embedding.forward(ids.long().to(origin.device)) - origin
        return vectors.transpose(1, 2).contiguous()

    def token_vectors(self) -> torch.Tensor:
        """Every vocabulary token's explained-space vector (V, D), for token substitutions."""
        ids = torch.arange(self.tokenizer.vocab_size, device=self.embedding.weight.device)
        return self.embed(ids[None]).squeeze(0).T

    def substitutes(self) -> torch.Tensor:
        """Ids of the vocabulary's tokens that are not special tokens (what token substitutions draw)."""
        special = {int(i) for i, token in self.tokenizer.tokenizer.get_added_tokens_decoder().items() if token.special}
        return torch.tensor([i for i in range(self.tokenizer.vocab_size) if i not in special], dtype=torch.long,
                            device="cpu")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows, width, length = inputs.shape
        content = inputs.transpose(1, 2) + self.origin.to(inputs.dtype)
        fill = torch.full((rows, length), self.fill_id, dtype=torch.long, device=inputs.device)
        ids = torch.cat([self.prefix.to(inputs.device).expand(rows, -1), fill,
                         self.suffix.to(inputs.device).expand(rows, -1)], dim=1)
        start, calls = self.prefix.numel(), []

        def swap(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(output.shape))
            if output.shape != (rows, ids.shape[1], width):  # another layer than the token embedding
                return output
            return torch.cat([output[:, :start], content.to(output.dtype), output[:, start + length:]], dim=1)

        handle = self.embedding.register_forward_hook(swap)
        try:
            if not self.huggingface:
                logits = self.model(ids)
            else:
                capture = self._attention is not None
                out = self.model(input_ids=ids, output_attentions=capture)
                if capture:
                    self._attention.extend(out.attentions)
                logits = out.logits
        finally:
            handle.remove()
        if calls != [(rows, ids.shape[1], width)]:
            raise IncompatibleError(f"the embedding layer xaibench hooks ran {len(calls)} times with outputs "
                                    f"{calls or 'none'}, not once with ({rows}, {ids.shape[1]}, {width}): it is not "
                                    "the layer the model reads its tokens with; name that one with --layer")
        return logits

    @contextmanager
    def capturing_attention(self) -> Iterator[list[torch.Tensor]]:
        """Within the block, each forward pass of a Hugging Face model appends its per-layer attention
        probabilities (N, heads, T, T) to the yielded list (the model is loaded with eager attention,
        whose returned probabilities are the ones multiplied with the values, so gradients reach them)."""
        captured: list[torch.Tensor] = []
        self._attention = captured
        try:
            yield captured
        finally:
            self._attention = None


def find_embedding(model: nn.Module, vocab_size: int, layer: str | None = None) -> nn.Embedding:
    """The token-embedding layer: ``layer`` by name (as in ``model``, or as ``xaibench inspect`` lists it
    under the wrapper, ``model.``-prefixed), a Hugging Face model's input embeddings, else the one
    ``nn.Embedding`` with at least ``vocab_size`` rows.

    Raises:
        InputError: no such layer, or several candidates (name one with --layer).
    """
    modules = dict(model.named_modules())
    modules.update({f"model.{name}": m for name, m in list(modules.items()) if name})  # as inspect lists them
    if layer is not None:
        if layer not in modules or not isinstance(modules[layer], nn.Embedding):
            raise InputError(f"{layer!r} is not an nn.Embedding layer of the model")
        return modules[layer]
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter) and isinstance(getter(), nn.Embedding):
        return getter()
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Embedding) and m.num_embeddings >= vocab_size]
    if len(found) != 1:
        named = ", ".join(name for name, _ in found) or "none"
        raise InputError(f"cannot tell the model's token-embedding layer (nn.Embedding layers with at least "
                         f"{vocab_size} rows: {named}); name it with --layer")
    return found[0][1]


def text_classifier(model: nn.Module, tokenizer: TextTokenizer, *, huggingface: bool = False,
                    layer: str | None = None) -> TextClassifier:
    """Wrap ``model`` for explaining: its embedding layer found and its special-token layout probed."""
    probe = tokenizer.encode(["a"] if tokenizer.tokenizer.token_to_id("a") is not None else ["x"])[0]
    embedding = find_embedding(model, tokenizer.vocab_size, layer)
    return TextClassifier(model, embedding, tokenizer, probe.prefix, probe.suffix, huggingface)


def token_scores(attributions: torch.Tensor) -> torch.Tensor:
    """A text's (N, D, L) attributions as one score per token (N, L): the sum over the embedding, or, for
    a map copied to every embedding channel (perturbation and attention methods score a token once), that
    value, as the image heatmaps take a map copied to every colour channel once."""
    maps = attributions.detach().float().cpu()
    copied = (maps == maps[:, :1]).flatten(1).all(dim=1)
    return torch.where(copied[:, None], maps[:, 0], maps.sum(dim=1))
