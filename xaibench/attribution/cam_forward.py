"""Class activation maps from forward passes only: Score-CAM, Ablation-CAM and Eigen-CAM.

Each reads a layer's feature maps A (N, C, *spatial) like the gradient CAMs (``cam_layer``: the same
default layer, ``layer`` and ``reshape`` parameters, a transformer's tokens read as their patch grid),
weighs the channels without gradients, keeps the positive part of the combination and upsamples it to
the input (bilinear for images, linear for sequences), the same map for every input channel. Maps keep
their scale (no rescaling to [0, 1] per image, as for Grad-CAM here).

  Score-CAM     w_k = p(X * H_k) - p(0),  H_k = A_k upsampled and min-max scaled to [0, 1],
                p = the softmax probability of the target class           relu(sum_k w_k A_k)
  Ablation-CAM  w_k = (y - y_k) / |y|,  y = the target logit, y_k = it with channel k of the layer's
                output set to zero                                       relu(sum_k w_k A_k)
  Eigen-CAM     the activations (positions x channels) projected on their first right singular vector,
                sign fixed so that the map sums to a positive number       relu(projection)

``batch_size`` bounds the rows of every pass: Score-CAM's masked copies (of several samples at once) and
Ablation-CAM's ablated rows are made chunk by chunk, never all C x N at once. Every pass runs without
autograd but one: the default layer is chosen on a pass of the first sample alone with gradients
(``cam_layer``), so a ``batch_size`` sized for forward passes holds there too. Channels whose map is
constant (Score-CAM: the mask would be empty) or zero (Ablation-CAM: nothing to ablate) get weight 0
without a pass, which is exactly what their pass would give.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.cam_layer import CamParams, Layer, capture_layer, upsample_map
from xaibench.attribution.chunks import map_chunks
from xaibench.attribution.layers import feature_map, parse_grid
from xaibench.core.batches import row_slices
from xaibench.core.devices import decomposition_device
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def channel_cam(weights: torch.Tensor, activations: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """relu(sum_k w_k A_k) for weights (n, C) and activations (n, C, *spatial'), upsampled to the inputs
    (n, C_in, *spatial) and repeated over their channels."""
    cam = torch.relu(torch.einsum("nc,nc...->n...", weights, activations)).unsqueeze(1)
    return upsample_map(cam, inputs).expand_as(inputs)


class _ForwardCam(Method):
    """Shared metadata of the forward-pass CAMs (not registered itself)."""

    modalities = ("image", "sequence")
    category = "cam"
    signed = False
    needs_gradients = False
    Params = CamParams


# ---------------------------------------------------------------------------------------------
# Score-CAM


def score_cam_weights(model: torch.nn.Module, inputs: torch.Tensor, activations: torch.Tensor,
                      target: torch.Tensor, baseline: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """Score-CAM's w_k = p(inputs * H_k) - ``baseline`` per sample and channel: (n, C).

    ``baseline`` (classes,) holds the class probabilities of the zero input. Rows of (sample, channel)
    masked copies go through the model ``batch_size`` at a time, samples after samples; each sample is
    reported to the progress listener when its last row is done.
    """
    flat = activations.flatten(2)
    varying = flat.amax(2) > flat.amin(2)  # a constant map scales to no mask: X * 0 is the baseline
    pairs = varying.nonzero()  # (rows, 2): sample-major, so samples finish in order
    ends = varying.sum(1).cumsum(0).tolist()  # rows done when each sample is done
    weights = activations.new_zeros(activations.shape[:2])
    reported = 0
    for rows in row_slices(pairs.shape[0], batch_size) if pairs.shape[0] else ():  # all constant: no pass
        sample, channel = pairs[rows].unbind(1)
        masks = _unit_range(upsample_map(activations[sample, channel].unsqueeze(1), inputs[sample]))
        probabilities = torch.softmax(model(inputs[sample] * masks), 1)
        weights[sample, channel] = probabilities.gather(1, target[sample, None])[:, 0] - baseline[target[sample]]
        reported = _report(bisect.bisect_right(ends, rows.stop), reported)
    _report(len(ends), reported)
    return weights


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each (1, *spatial) map of (r, 1, *spatial) scaled to [0, 1] by its minimum and maximum; a
    constant map becomes 0."""
    flat = maps.flatten(1)
    low = flat.amin(1).view(-1, *(1,) * (maps.ndim - 1))
    span = flat.amax(1).view_as(low) - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)


def _report(done: int, reported: int) -> int:
    """Report the samples finished since the last report; returns the count finished."""
    if done > reported:
        advance(done - reported)
    return max(done, reported)


@METHODS.register("scorecam")
class ScoreCam(_ForwardCam):
    """Score-CAM (Wang et al., CVPR Workshops 2020): each channel's map, upsampled to the input and
    min-max scaled to [0, 1], masks the input (input * mask); the channel's weight is its "increase of
    confidence" (the paper's Definitions 4 and 5, Eqs. 6 and 10), the target class's softmax probability
    for the masked input minus that for the baseline input; the map is relu(sum_k w_k A_k), upsampled.

    Baseline: the zero input, as in the paper's experiments (X_b = 0); it is also what the masking gives
    where a mask is 0, so a channel with an empty mask has weight 0. Probabilities, not logits: the paper
    weighs with post-softmax values (Sec. 3.2, Fig. 5: logits made the maps less class-discriminative).
    Algorithm 1 of the paper instead takes a softmax over the channels of the logit increases, which is
    what pytorch-grad-cam computes (a softmax over channels of the masked inputs' logits; the baseline
    term cancels under that softmax); the authors' code weighs by the masked input's probability without
    subtracting the baseline's. Here the increase is kept as defined: a channel whose region lowers the
    class's probability below the blank input's counts against the map. A constant channel map has no
    location to mask (the authors' code skips it): weight 0, no pass.

    Cost: one model row per sample and non-constant channel (``batch_size`` masked rows per pass,
    several samples together), plus one pass of each chunk to read the layer, one zero row for the
    baseline and, for the default layer, one row with gradients to choose it.
    """

    description = "channels' maps mask the input; weights = increase of class probability (Wang et al. 2020)"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: CamParams,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        layer: str | Layer | None = params.layer
        target = target.to(inputs.device)
        out = torch.empty_like(inputs)
        with torch.no_grad():
            baseline = torch.softmax(model(inputs.new_zeros((1, *inputs.shape[1:]))), 1)[0]
        for rows in row_slices(inputs.shape[0], batch_size):
            capture = capture_layer(model, layer, inputs[rows], target[rows], reshape=params.reshape)
            layer = capture.layer  # the default layer is chosen on the first chunk and kept for the others
            with torch.no_grad():
                weights = score_cam_weights(model, inputs[rows], capture.activations, target[rows], baseline,
                                            batch_size)
            out[rows] = channel_cam(weights, capture.activations, inputs[rows])
        return out


# ---------------------------------------------------------------------------------------------
# Ablation-CAM


@dataclasses.dataclass
class _Ablation:
    """How a call ablates: the layer module, which of its calls in one forward pass is the one read
    (the last, as ``capture_layer`` reads it), the patch grid of ``reshape``, and whether the layers
    before it run once per pass on the sample's single row (``shared_prefix``) or on every row."""

    module: torch.nn.Module
    calls: int
    grid: tuple[int, int] | None
    shared_prefix: bool = True


def ablation_cam_weights(model: torch.nn.Module, ablation: _Ablation, inputs: torch.Tensor,
                         activations: torch.Tensor, target: torch.Tensor, batch_size: int | None,
                         reference: torch.Tensor | None = None) -> torch.Tensor:
    """Ablation-CAM's w_k = (y - y_k) / |y| per sample and channel: (n, C).

    Each sample's rows, the unablated one first and then one per channel with a non-zero map, go through
    the model ``batch_size`` at a time (one sample per pass). ``reference``, the plain logits of the first
    sample, checks the shared-prefix reading on that sample's first pass (``_ablated_logits``).
    """
    weights = activations.new_zeros(activations.shape[:2])
    for i in range(inputs.shape[0]):
        channels = activations[i].flatten(1).any(1).nonzero()[:, 0]
        ablated = torch.cat([channels.new_full((1,), -1), channels])  # -1: the unablated row
        logits = torch.cat([
            _checked_logits(model, ablation, inputs[i : i + 1], ablated[rows],
                            reference if i == 0 and rows.start == 0 else None)
            for rows in row_slices(ablated.numel(), batch_size)
        ])
        scores = logits.gather(1, target[i].expand(ablated.numel())[:, None])[:, 0]
        score = scores[0]
        weights[i, channels] = (score - scores[1:]) / torch.where(score != 0, score.abs(), torch.ones_like(score))
        advance(1)
    return weights


def _checked_logits(model: torch.nn.Module, ablation: _Ablation, sample: torch.Tensor, channels: torch.Tensor,
                    reference: torch.Tensor | None) -> torch.Tensor:
    """``_ablated_logits``; with ``reference`` (a first pass that holds the unablated row), the shared
    prefix is kept only if that row reproduces the plain logits, else every later pass replicates the
    sample's rows (``ablation.shared_prefix`` becomes False)."""
    if not ablation.shared_prefix or reference is None:
        return _ablated_logits(model, ablation, sample, channels)
    try:
        logits = _ablated_logits(model, ablation, sample, channels)
    except Exception:  # noqa: BLE001 (RuntimeError, AssertionError...: a layer after it refuses the broadcast row)
        logits = None  # the replicated pass below is the plain reading; its own error, if any, is raised
    if logits is None or logits.shape != (channels.numel(), reference.shape[1]) or not _close(logits[:1], reference):
        ablation.shared_prefix = False
        return _ablated_logits(model, ablation, sample, channels)
    return logits


def _close(logits: torch.Tensor, reference: torch.Tensor) -> bool:
    """Equal up to the rounding of another batch composition."""
    tolerance = max(1e-3, 8 * torch.finfo(reference.dtype).eps)
    return torch.allclose(logits.to(reference.dtype), reference, rtol=tolerance,
                          atol=tolerance * float(reference.abs().max().clamp(min=1)))


def _ablated_logits(model: torch.nn.Module, ablation: _Ablation, sample: torch.Tensor,
                    channels: torch.Tensor) -> torch.Tensor:
    """Logits of one sample (1, *shape) with ``channels[j]`` of the layer's feature map set to zero in
    row j (-1: nothing ablated), one row per entry.

    With ``ablation.shared_prefix`` the model runs on the single row: the hook turns the layer's output
    into one row per entry, and tensors from before the layer (a residual shortcut) broadcast over them,
    as every row would have computed the same values; otherwise the sample is replicated.
    """
    rows = channels.numel()
    fed = sample if ablation.shared_prefix else sample.expand(rows, *sample.shape[1:])
    ablate = channels >= 0
    row_index = torch.arange(rows, device=channels.device)[ablate]

    def ablated(output: torch.Tensor) -> torch.Tensor:
        out = output.expand(rows, *output.shape[1:]).clone()
        feature_map(out, fed, ablation.grid)[row_index, channels[ablate]] = 0  # a view: writes into out
        return out

    with torch.no_grad(), _replacing(ablation.module, ablation.calls, ablated):
        return model(fed)


@contextmanager
def _replacing(module: torch.nn.Module, call: int, replace: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """A forward hook that replaces the output of ``module``'s ``call``-th call (1-based) of a pass."""
    seen = 0

    def hook(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        nonlocal seen
        seen += 1
        return replace(output) if seen == call else None

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _plain_pass(model: torch.nn.Module, module: torch.nn.Module, sample: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The logits of ``sample`` and the number of times ``module`` runs in one forward pass."""
    calls = 0

    def count(_module: torch.nn.Module, _args: tuple, _output: object) -> None:
        nonlocal calls
        calls += 1

    handle = module.register_forward_hook(count)
    try:
        with torch.no_grad():
            logits = model(sample)
    finally:
        handle.remove()
    return logits, calls


@METHODS.register("ablationcam")
class AblationCam(_ForwardCam):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): the weight of channel k is the relative drop of the
    target logit y when the channel is set to zero in the layer's output, w_k = (y - y_k) / y, and the
    map is relu(sum_k w_k A_k), upsampled.

    The paper motivates w_k as a slope, (y - y_k) over the size of the change, and weighs with
    (y - y_k) / y (pytorch-grad-cam uses the same ratio). Here y is divided by |y|: for a positive
    logit, the case the paper considers, that is its weight; for a negative one, dividing by y would flip
    every weight and show the channels against the class (where y = 0, w_k = y - y_k). pytorch-grad-cam
    sets an ablated channel to zero only when the layer's minimum is 0, and to that minimum minus 1e7
    otherwise; here it is always zero, as in the paper. For a transformer's tokens, channel k is feature k
    of the patch tokens that make the map; the class token is left as it is (pytorch-grad-cam also zeroes
    it).

    Cost: a pass holds one sample's rows, at most ``batch_size``. The layers before the ablated one run
    once per pass on the sample's single row and only the rest of the model runs on every row: the hook
    expands the layer's output into the ablated rows, and tensors from before the layer (a residual
    shortcut) broadcast over them with the values every row would have computed (on ResNet-18's
    ``layer4``, one forward pass of the image and pooling + the linear head per channel). This is checked
    on the first sample's first pass, whose unablated row must reproduce the plain logits; a model that
    fails (a concatenation across the layer) gets the sample replicated on every row instead. A channel
    whose map is zero everywhere has nothing to ablate: weight 0, no row.
    """

    description = "weights = relative drop of the target logit when a channel is zeroed (Desai & Ramaswamy 2020)"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: CamParams,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        layer: str | Layer | None = params.layer
        target = target.to(inputs.device)
        out = torch.empty_like(inputs)
        ablation: _Ablation | None = None
        for rows in row_slices(inputs.shape[0], batch_size):
            capture = capture_layer(model, layer, inputs[rows], target[rows], reshape=params.reshape)
            layer = capture.layer  # the default layer is chosen on the first chunk and kept for the others
            reference = None
            if ablation is None:
                reference, calls = _plain_pass(model, capture.layer[1], inputs[:1])
                ablation = _Ablation(capture.layer[1], calls, parse_grid(params.reshape))
            weights = ablation_cam_weights(model, ablation, inputs[rows], capture.activations, target[rows],
                                           batch_size, reference)
            out[rows] = channel_cam(weights, capture.activations, inputs[rows])
        return out


# ---------------------------------------------------------------------------------------------
# Eigen-CAM


def eigen_cam_map(activations: torch.Tensor, center: bool = False) -> torch.Tensor:
    """The projection of each sample's activations, a (positions x channels) matrix, on its first right
    singular vector, sign fixed (``EigenCam``): (n, *spatial), before the ReLU. The SVD runs on the CPU
    for MPS inputs (MPS has no SVD kernel; the matrices are small) and the map is moved back."""
    matrix = activations.flatten(2).transpose(1, 2)  # (n, positions, channels)
    if center:
        matrix = matrix - matrix.mean(1, keepdim=True)
    left, singular, _ = torch.linalg.svd(matrix.to(decomposition_device(matrix.device)), full_matrices=False)
    projection = (left[:, :, 0] * singular[:, :1]).to(matrix.device)  # = matrix @ v_1
    return (projection * _sign(projection)[:, None]).view(activations.shape[0], *activations.shape[2:])


def _sign(projection: torch.Tensor) -> torch.Tensor:
    """+1 or -1 per row: the sign of the row's sum, or where that is 0 of its entry of largest magnitude
    (the first such), so that the flipped row sums to a positive number."""
    largest = projection.gather(1, projection.abs().argmax(1, keepdim=True))[:, 0]
    total = projection.sum(1)
    decider = torch.where(total != 0, total, largest)
    return torch.where(decider < 0, -1.0, 1.0).to(projection.dtype)


@METHODS.register("eigencam")
class EigenCam(_ForwardCam):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the layer's activations of a sample, a matrix O of
    positions x channels, factorised O = U S V^T; the map is O v_1 = s_1 u_1, the activations projected
    on their first principal direction, relu'd and upsampled. Class-agnostic: the target is not used
    (it only helps the default layer rule pick the same layer as the other CAMs).

    The paper factorises the activations as they are (no centring); ``center`` subtracts each channel's
    mean over the positions first, as pytorch-grad-cam does. The sign of a singular vector is arbitrary
    (SVD routines differ between devices and versions): it is fixed so that the map sums to a positive
    number (for a zero sum, so that its largest-magnitude entry is positive). For non-negative activations
    (after a ReLU) and no centring, the first singular vectors are non-negative, so the map is too and
    the ReLU changes nothing; for activations of both signs (a transformer's LayerNorm) or with
    centring, the ReLU keeps the positive side. pytorch-grad-cam does not fix the sign, so its ReLU can
    keep either side.
    """

    description = "activations projected on their first principal component, class-agnostic (Muhammad & Yeasin 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params(CamParams):
        """layer: dotted module name; None picks the last learned feature map before the head that the
        target logit depends on (a CNN's last convolution or block, a ViT's last ln_1).
        reshape: how tokens (N, T, D) of images become a patch grid: auto (a class token or none, the grid
        from the image size) or HxW (the last H*W tokens, row by row).
        center: subtract each channel's mean over the positions before the SVD (pytorch-grad-cam's
        variant; the paper does not)."""

        center: bool = False

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        layer: str | Layer | None = params.layer
        target = target.to(inputs.device)

        def chunk(rows: slice) -> torch.Tensor:
            nonlocal layer  # the default layer is chosen on the first chunk and kept for the others
            capture = capture_layer(model, layer, inputs[rows], target[rows], reshape=params.reshape)
            layer = capture.layer
            cam = torch.relu(eigen_cam_map(capture.activations, params.center)).unsqueeze(1)
            return upsample_map(cam, inputs[rows]).expand_as(inputs[rows])

        return map_chunks(inputs, batch_size, chunk)
