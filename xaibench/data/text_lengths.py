"""Texts of different token lengths, prepared one length at a time and put back together.

A batch of texts is explained without padding (``xaibench.data.text_inputs``), so ``explain`` prepares
the selected texts in groups of one token length (``prepare_by_length``), explains each group, and
joins the groups into one ``Prepared`` in the order the texts were selected (``joined``): inputs and
attributions padded with zeros to the longest text, ``Dataset.tokens`` saying where each text ends.
The groups are a loop over the distinct lengths, not over texts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from xaibench.data.base import Dataset
from xaibench.data.prepare import Prepared, Selection, prepare, selected_data
from xaibench.data.text_inputs import length_groups

if TYPE_CHECKING:
    from xaibench.core.memory import RowPlan
    from xaibench.models import LoadedModel


def prepare_by_length(model: LoadedModel, selection: Selection,
                      batch_size: int | RowPlan | None = None) -> tuple[list[Prepared], torch.Tensor]:
    """``prepare`` for each token length of the selected texts (once for one length or other data), and
    the order that puts the groups' samples back in selection order (positions into their concatenation)."""
    text_model = getattr(model.module, "input_modality", None) == "text"
    data = selected_data(model, selection) if text_model else None
    groups = [[0]] if data is None or data.texts is None else length_groups(data, model.module)
    if len(groups) == 1:
        prepared = prepare(model, selection, batch_size)
        return [prepared], torch.arange(len(prepared.data), device="cpu")
    source = data.indices.tolist()
    parts = [prepare(model, replace(selection, n=None, indices=",".join(str(source[p]) for p in group)), batch_size)
             for group in groups]
    flat = torch.tensor([p for group in groups for p in group], dtype=torch.long, device="cpu")
    return parts, torch.argsort(flat)


def padded(tensors: list[torch.Tensor], order: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """Tensors whose last axis differs, padded with ``value`` to the longest, concatenated and reordered."""
    longest = max(t.shape[-1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, longest - t.shape[-1]), value=value) for t in tensors])[
        order.to(tensors[0].device)]


def joined(parts: list[Prepared], order: torch.Tensor) -> Prepared:
    """One ``Prepared`` of the groups, in selection order; token ids padded with -1, masks with False."""
    if len(parts) == 1:
        return parts[0]

    def cat(values: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(values)[order.to(values[0].device)]

    first, datas = parts[0], [p.data for p in parts]
    rows = order.tolist()

    def listed(field: str) -> tuple | None:
        values = [getattr(d, field) for d in datas]
        return None if values[0] is None else tuple(item for value in values for item in value)

    def ordered(values: tuple | None) -> tuple | None:
        return None if values is None else tuple(values[i] for i in rows)

    data: Dataset = replace(
        first.data, x=padded([d.x for d in datas], order, -1.0), indices=cat([d.indices for d in datas]),
        y=None if first.data.y is None else cat([d.y for d in datas]),
        masks=None if first.data.masks is None else padded([d.masks for d in datas], order, False),
        texts=ordered(listed("texts")), evidence=ordered(listed("evidence")), tokens=ordered(listed("tokens")))
    inputs = padded([p.inputs for p in parts], order)
    return replace(first, meta=replace(first.meta, input_shape=tuple(inputs.shape[1:])), data=data, inputs=inputs,
                   probabilities=cat([p.probabilities for p in parts]),
                   predictions=cat([p.predictions for p in parts]), targets=cat([p.targets for p in parts]))
