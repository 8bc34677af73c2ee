"""Gaussian blur of any width, batched over many sigmas, for blur paths (Blur IG) and blur baselines (BEE).

The blur is separable, so it is applied as one (L x L) matrix per spatial axis and per sigma. The
"reflect" boundary (``d c b a | a b c d | d c b a``, scipy.ndimage's mode "reflect") is folded into
the matrix by index arithmetic: a kernel tap that falls outside the signal is mapped back inside with
period 2L, which is exact for any kernel radius, including one many times the image size (where a
padded convolution would need padding wider than the image). The kernel matches
``scipy.ndimage.gaussian_filter(..., mode="reflect", truncate=4.0)``: taps at integer offsets up to
radius ``int(4 sigma + 0.5)``, weights ``exp(-x^2 / (2 sigma^2))`` normalised to sum to one; sigma 0
is the identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

TRUNCATE = 4.0


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Blur the spatial axes of images (N, C, H, W) or sequences (N, C, L) with Gaussians.

    Args:
        x: batch of images or sequences; channels are blurred independently, never mixed.
        sigma: standard deviation(s) in samples (pixels), all >= 0. A scalar gives a tensor of
            ``x``'s shape. A vector (S,) blurs every sample with every sigma and gives
            (N, S, *x.shape[1:]); a matrix (N, S) gives each sample its own S sigmas, same output.

    Raises:
        InputError: for another input rank, a sigma of another shape, or a negative / non-finite sigma.
    """
    if x.ndim not in (3, 4):
        raise InputError(f"blur needs (N, C, L) or (N, C, H, W) inputs, got shape {tuple(x.shape)}")
    # the float64 matrices are built where the sigmas are (a number: the CPU; MPS has no float64), then moved
    sig = torch.as_tensor(sigma, dtype=torch.float64,
                          device=sigma.device if isinstance(sigma, torch.Tensor) else "cpu")
    if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
        raise InputError("blur sigma must be finite and >= 0")
    if sig.ndim > 2 or (sig.ndim == 2 and sig.shape[0] != x.shape[0]):
        raise InputError(f"blur sigma must be a scalar, (S,) or ({x.shape[0]}, S), got {tuple(sig.shape)}")
    batch = "ns" if sig.ndim == 2 else "s"
    sig_2d = sig.reshape(-1) if sig.ndim < 2 else sig
    rows = blur_matrices(x.shape[-1], sig_2d).to(x.device, x.dtype)
    if x.ndim == 3:
        out = torch.einsum(f"{batch}il,ncl->nsci", rows, x)
    else:
        across = torch.einsum(f"{batch}jw,nchw->nschj", rows, x)
        cols = rows if x.shape[-2] == x.shape[-1] else blur_matrices(x.shape[-2], sig_2d)
        out = torch.einsum(f"{batch}ih,nschj->nscij", cols.to(x.device, x.dtype), across)
    return out.squeeze(1) if sig.ndim == 0 else out


def blur_matrices(size: int, sigmas: torch.Tensor) -> torch.Tensor:
    """Reflect-boundary Gaussian blur matrices, shape ``sigmas.shape + (size, size)``, float64.

    Row i holds the weights that output sample i gives to each input sample: ``blurred = M @ signal``.
    All sigmas share one tap grid (the largest radius); taps beyond a sigma's own radius get weight 0,
    so each row equals scipy's truncated kernel.
    """
    sig = sigmas.to(torch.float64).reshape(-1)
    own_radius = torch.floor(TRUNCATE * sig + 0.5)
    radius = int(own_radius.max().item()) if sig.numel() else 0
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=sig.device)
    # sigma 0 keeps only the centre tap: 0 / tiny = 0 there, and the mask removes the others
    scaled = offsets / sig.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    taps = torch.exp(-0.5 * scaled.square()) * (offsets.abs() <= own_radius[:, None])
    taps = taps / taps.sum(-1, keepdim=True)
    source = _reflect(torch.arange(size, device=sig.device)[:, None] + offsets.long()[None, :], size)
    shape = (sig.numel(), size, offsets.numel())
    matrices = torch.zeros(sig.numel(), size, size, dtype=torch.float64, device=sig.device)
    matrices.scatter_add_(2, source.expand(shape), taps[:, None, :].expand(shape))
    return matrices.reshape(*sigmas.shape, size, size)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map any integer index into [0, size) by half-sample symmetric reflection (period 2 * size)."""
    folded = torch.remainder(index, 2 * size)
    return torch.where(folded >= size, 2 * size - 1 - folded, folded)
