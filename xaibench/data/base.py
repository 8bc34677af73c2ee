"""The in-memory dataset every loader returns; torch is imported lazily so that listing stays light."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@dataclass(frozen=True)
class Dataset:
    """Samples as tensors, ready for a model (after ``normalise`` when the model asks for it).

    Attributes:
        x: float32 inputs, shape (N, *sample_shape); raw values (not normalised).
        y: int64 labels (N,), or None when the data has no labels: the model's class indices, except
            while ``label_names`` is set.
        masks: bool ground-truth masks for data that has them, else None: objects (N, H, W) of images,
            positions (N, L) of sequences (the localisation metrics' shapes).
        indices: int64 (N,): each sample's index in the split it came from.
        name: dataset name or file path; split: "train" / "test" / "all".
        modality: "image", "tabular", "sequence" or "text".
        class_names: the class names in class-index order, where the data declares them (a built-in
            dataset, an image folder's ``classes.txt``, an array ``class_names``).
        label_names: labels read as names (class folders, string labels), which ``y`` indexes until
            ``data.prepare`` matches them to the model's class names and sets ``y`` to class indices.
        feature_names: optional names of tabular features.
        ground_truth: float32 ground-truth attributions, the shape of ``x``, for data whose right
            explanation is known (``xaibench.data.synthetic``), else None; in raw input space.
        texts: the sentences of text data (modality "text"), one per sample. Until a model's tokenizer
            has read them (``xaibench.data.prepare``), ``x`` is an empty (N, 0) tensor; after, ``x``
            holds the content token ids (N, L) as floats, without special tokens.
        evidence: per sample of text data, the character spans (start, end) of the words that decide
            its label, where known (the generated text task); the tokenizer turns them into ``masks``.
        tokens: per sample, the content tokens as the model's tokenizer wrote them (set by prepare).
    """

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    split: str
    modality: str
    indices: torch.Tensor
    masks: torch.Tensor | None = None
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    label_names: tuple[str, ...] | None = None
    ground_truth: torch.Tensor | None = None
    texts: tuple[str, ...] | None = None
    evidence: tuple[tuple[tuple[int, int], ...], ...] | None = None
    tokens: tuple[tuple[str, ...], ...] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def select(self, positions: torch.Tensor | list[int]) -> Dataset:
        """The samples at ``positions`` (positions in this dataset, not original indices)."""
        pos = torch.as_tensor(positions, dtype=torch.long, device=self.indices.device)
        picked = pos.tolist()
        return replace(
            self,
            x=self.x[pos],
            y=None if self.y is None else self.y[pos],
            masks=None if self.masks is None else self.masks[pos],
            ground_truth=None if self.ground_truth is None else self.ground_truth[pos],
            indices=self.indices[pos],
            texts=None if self.texts is None else tuple(self.texts[i] for i in picked),
            evidence=None if self.evidence is None else tuple(self.evidence[i] for i in picked),
            tokens=None if self.tokens is None else tuple(self.tokens[i] for i in picked),
        )
