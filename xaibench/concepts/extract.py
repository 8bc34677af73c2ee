"""Concept extraction end to end in memory: activations, dictionary, codes per image, importance.

CRAFT / Fel et al. (2023): split f = h o g at a layer, factorise the activations of a class's images
A ~ U W + b, encode every spatial position of each image's activation map against the bank (the concept
attribution maps), and estimate each concept's importance for the class by perturbing the codes and
passing the rebuilt activations through h. Local importance is per image, global the mean over images.

Under torchrun (``xaibench.core.distributed``) each process takes a contiguous block of the images: it passes
them through g (the activation rows and the feature maps), encodes them and estimates their local
importance; the blocks are gathered in image order, so every process holds what one process computes.
The factorisation runs on every process on the gathered rows and rank 0's bank is used everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xaibench.attribution.layers import token_grid
from xaibench.concepts.base import DECOMPOSITIONS, IMPORTANCES, ConceptBank, ConceptHead
from xaibench.concepts.split import Split, activations, crops, feature_maps
from xaibench.core import distributed
from xaibench.core.errors import InputError


@dataclass(frozen=True)
class Settings:
    """How to extract: decomposition, concept count, activation mode, importance estimator, and the rows
    of a pass: ``batch_size`` through g (the model up to the layer), ``head_batch_size`` through h (the
    model after it, cheaper per row; None: ``batch_size``)."""

    method: str = "nmf"
    n_concepts: int = 10
    mode: str = "patches"
    importance: str = "sobol"
    patch_size: float = 0.25
    seed: int = 0
    batch_size: int | None = None
    head_batch_size: int | None = None

    @property
    def head_rows(self) -> int | None:
        """The most rows per call of h (importance estimators, concept metrics)."""
        return self.batch_size if self.head_batch_size is None else self.head_batch_size


@dataclass(frozen=True)
class Extraction:
    """What extraction found for one class.

    Attributes:
        activations: (n, p) the rows the bank was fitted on; codes their codes (n, k).
        maps: (N, p, *spatial) g(x) of every image (spatial: one axis of tokens for a transformer
            block); image_codes (N, *spatial, k) their encoding.
        local: (N, k) importance per image; importance (k,) its mean over images.
    """

    bank: ConceptBank
    activations: torch.Tensor
    codes: torch.Tensor
    maps: torch.Tensor
    image_codes: torch.Tensor
    local: torch.Tensor
    importance: torch.Tensor


def concept_head(split: Split, bank: ConceptBank) -> ConceptHead:
    """codes (N, *spatial, k) -> logits: decode each position, move channels first, run h."""

    def head(codes: torch.Tensor) -> torch.Tensor:
        rebuilt = bank.decode(codes)
        if rebuilt.ndim > 2:
            rebuilt = rebuilt.movedim(-1, 1)
        return split.h(rebuilt)

    return head


def encode_maps(maps: torch.Tensor, bank: ConceptBank, batch_size: int | None) -> torch.Tensor:
    """Codes of every position of activation maps (N, p, *spatial): (N, *spatial, k)."""
    decomposition = DECOMPOSITIONS.get(bank.method)()
    rows = maps.movedim(1, -1)
    flat = rows.reshape(-1, maps.shape[1])
    step = batch_size or flat.shape[0]
    codes = torch.cat([decomposition.encode(flat[i:i + step], bank) for i in range(0, flat.shape[0], step)])
    return codes.reshape(*rows.shape[:-1], bank.k)


def concept_maps(split: Split, bank: ConceptBank, inputs: torch.Tensor,
                 batch_size: int | None = None) -> torch.Tensor:
    """Concept attribution maps of any images against a learned bank: each position's codes (each patch
    token's, for a transformer block), upsampled to the input's size (bilinear) like Grad-CAM, (N, k, H, W).

    Raises:
        InputError: inputs that are not images, or a layer without positions (codes per image).
    """
    codes = encode_maps(feature_maps(split, inputs, batch_size), bank, batch_size)
    if codes.ndim not in (3, 4) or inputs.ndim != 4:
        raise InputError("concept maps need images and a convolutional layer or transformer block "
                         "(codes per position)")
    return upsampled(codes, tuple(inputs.shape[2:]))


def upsampled(codes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Codes per position (N, h, w, k), or per token (N, T, k) of a transformer block (their patch grid,
    ``token_grid``), as maps (N, k, H, W) at the image size ``size``, bilinear like Grad-CAM."""
    grid = token_grid(codes, size) if codes.ndim == 3 else codes.movedim(-1, 1)
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)


def extract(split: Split, inputs: torch.Tensor, target: torch.Tensor, settings: Settings) -> Extraction:
    """Learn ``settings.n_concepts`` concepts of ``inputs`` at the split and their importance for ``target``.

    Under torchrun this process passes its block of the images through g and scores them, and the
    blocks are gathered (module docstring); the result is the one process's, up to summation order.
    """
    decomposition = DECOMPOSITIONS.get(settings.method)()
    n = inputs.shape[0]
    block = distributed.shard_rows(n, check=n)  # every image when launched alone
    mine = inputs[block]
    rows = _gathered_rows(activations(split, mine, settings.mode, patch_size=settings.patch_size,
                                      batch_size=settings.batch_size), mine.shape[0], n)
    if rows.shape[0] < settings.n_concepts:
        raise InputError(f"{rows.shape[0]} activation rows cannot give {settings.n_concepts} concepts; "
                         "use more images or fewer concepts")
    if decomposition.needs_nonnegative_activations and bool((rows < 0).any()):
        raise InputError(f"{settings.method} needs non-negative activations and layer {split.layer} has "
                         "negative values; choose a layer after a ReLU or --method semi_nmf / pca")
    fitted = decomposition.fit(rows, settings.n_concepts, settings.seed)
    # Every process fits (so a failing fit fails everywhere), then all use rank 0's bank: codes and
    # importances match the bank written even if a threaded solver's rounding differs between hosts.
    bank = distributed.broadcast_object(fitted.bank)
    maps = feature_maps(split, mine, settings.batch_size)
    image_codes = encode_maps(maps, bank, settings.batch_size)
    estimator = IMPORTANCES.get(settings.importance)
    # No sampled_shard here: the estimators' random draws (rise masks, the Sobol' design) are shared by
    # all images, so every process draws them from the same fresh generator, as one process does.
    local = estimator(concept_head(split, bank), image_codes,
                      target[block] if isinstance(target, torch.Tensor) and target.ndim else target,
                      batch_size=settings.head_rows, generator=torch.Generator().manual_seed(settings.seed))
    maps, image_codes, local = (distributed.gather_rows(t, n) for t in (maps, image_codes, local))
    return Extraction(bank, rows, fitted.codes, maps, image_codes, local, local.mean(0))


def _gathered_rows(rows: torch.Tensor, images: int, total: int) -> torch.Tensor:
    """Activation rows (images * r, p) of this process's block of images, gathered over processes in
    image order: (total * r, p). Every mode gives each image the same number r of rows, image-major."""
    per_image = rows.reshape(images, rows.shape[0] // images, *rows.shape[1:])
    return distributed.gather_rows(per_image, total).flatten(0, 1)


def crop_codes(split: Split, inputs: torch.Tensor, found: Extraction, settings: Settings) -> torch.Tensor:
    """Codes (crops, k) of the CRAFT crops of ``inputs``, image-major: in patches mode the fitted rows
    are these crops, so their codes are reused; otherwise the crops are passed through g and encoded."""
    if settings.mode == "patches":
        return found.codes
    pooled = activations(split, inputs, "patches", patch_size=settings.patch_size, batch_size=settings.batch_size)
    return DECOMPOSITIONS.get(found.bank.method)().encode(pooled, found.bank)


def top_crops(codes: torch.Tensor, per_concept: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The most activating crops of each concept: indices into the crops (k, m) and their codes (k, m)."""
    top = codes.topk(min(per_concept, codes.shape[0]), dim=0)
    return top.indices.T, top.values.T


def crop_images(inputs: torch.Tensor, indices: torch.Tensor, patch_size: float) -> torch.Tensor:
    """The crops at ``indices`` (any shape) of ``crops(inputs)``: (*indices.shape, C, H, W)."""
    tiles = crops(inputs, patch_size)
    return tiles[indices.flatten()].reshape(*indices.shape, *tiles.shape[1:])
