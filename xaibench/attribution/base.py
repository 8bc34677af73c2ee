"""The method contract, the method registry and the helpers every method shares.

A method is a class registered in ``METHODS`` with metadata as class attributes and a frozen ``Params``
dataclass that declares its parameters (names, types, defaults). ``Method.attribute`` validates the
parameters, the inputs and the target, and returns a tensor with the inputs' shape.

One batch knob everywhere: ``batch_size`` bounds the number of rows (samples, path points or
perturbed copies) in one forward pass; None means everything in one pass.

torch is imported lazily so that listing methods does not import it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.core.batches import row_slices
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.core.lazy import lazy_import
from xaibench.core.registry import Registry
from xaibench.models.meta import MODALITIES, SAMPLE_RANK

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

METHODS: Registry[type[Method]] = Registry(
    "method",
    modules=(
        "xaibench.attribution.gradient",
        "xaibench.attribution.noise",
        "xaibench.attribution.path",
        "xaibench.attribution.cam",
        "xaibench.attribution.cam_weights",
        "xaibench.attribution.cam_forward",
        "xaibench.attribution.fullgrad",
        "xaibench.attribution.attention",
        "xaibench.attribution.lrp",
        "xaibench.attribution.perturbation",
        "xaibench.attribution.control",
        "xaibench.attribution.bee",
        "xaibench.attribution.guided_ig",
        "xaibench.attribution.rise",
        "xaibench.llm.method",
    ),
)


class Method:
    """Base class of attribution methods. Subclasses set the metadata and implement ``_attribute``.

    Metadata (class attributes): ``modalities`` it applies to, ``category`` (gradient, path, cam,
    perturbation, attention, control, llm), ``model_kind`` (None: any model; "attention": one with
    torch.nn.MultiheadAttention modules), ``signed`` (whether maps carry a sign), ``needs_gradients``,
    ``stochastic`` (uses the generator), ``needs_references`` / ``reference_count`` (training samples it
    is given), ``remote`` (every explanation is a request to a service, so metrics that re-explain are
    not run on it), ``description`` (one line for listings).
    """

    name: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    category: ClassVar[str] = "gradient"
    model_kind: ClassVar[str | None] = None  # the kind of model it needs (tests pick their toy model by it)
    signed: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    needs_references: ClassVar[bool] = False
    reference_count: ClassVar[int | None] = 100  # training samples supplied as references; None: all
    remote: ClassVar[bool] = False  # each explanation is a paid request elsewhere (llm): never re-explained
    float32_only: ClassVar[bool] = False  # refused under --dtype bfloat16/float16 (xaibench.core.precision)
    description: ClassVar[str] = ""

    @dataclasses.dataclass(frozen=True)
    class Params:
        """No parameters."""

    def wants_references(self, params: dict[str, Any]) -> bool:
        """Whether these (raw) parameters need training samples as references. Methods whose training
        baseline family is a parameter (path methods, bee) override this."""
        return self.needs_references

    def attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        *,
        target: torch.Tensor | int,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        **params: Any,
    ) -> torch.Tensor:
        """Attributions for ``inputs`` (N, *shape) towards ``target`` class logits, same shape as inputs.

        Args:
            model: returns logits (N, classes).
            inputs: float tensor, batch first.
            target: class index per sample (N,) or one int for all.
            batch_size: the most rows per forward pass; None for one pass.
            generator: the only source of randomness for stochastic methods.
            **params: method parameters; strings are converted to the declared types.
        """
        parsed = parse_params(self.Params, params, owner=f"method {self.name!r}")
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        if inputs.ndim < 2 or inputs.shape[0] == 0:
            raise InputError(f"inputs must be a non-empty batch, got shape {tuple(inputs.shape)}")
        if not torch.isfinite(inputs).all():
            raise InputError("inputs contain NaN or infinite values")
        if (modality := input_modality(model, inputs)) not in self.modalities:
            raise IncompatibleError(f"{self.name} does not apply to {modality} inputs")
        target = as_target(target, inputs.shape[0])
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        try:
            out = self._attribute(model, inputs.detach().float(), target, parsed, batch_size, generator)
        except (RuntimeError, IncompatibleError):
            # probed only when the method failed: a probe before every call is one more forward pass
            # (on a ViT a fifth of an 8-image Grad-CAM), and a model without gradients always fails
            if self.needs_gradients:
                require_gradients(model, inputs[:1])
            raise
        if out.shape != inputs.shape:  # a bug in a method, not a user error
            raise AssertionError(f"{self.name} returned {tuple(out.shape)} for {tuple(inputs.shape)}")
        return out.detach()

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Any,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        raise NotImplementedError


def attribute(method: str, model: torch.nn.Module, inputs: torch.Tensor, /, **kwargs: Any) -> torch.Tensor:
    """Functional form: ``attribute("integrated_gradients", model, x, target=y, n_steps=32)``."""
    return METHODS.get(method)().attribute(model, inputs, **kwargs)


# ---------------------------------------------------------------------------------------------
# parameters

_CONVERTERS = {"int": int, "float": float, "str": str}


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def parse_params(params_cls: type, raw: dict[str, Any], *, owner: str) -> Any:
    """Build ``params_cls`` from ``raw``; string values are converted to the field's declared type.

    Field types are written as strings (``from __future__ import annotations``): int, float, str, bool,
    optionally ``| None`` (the string "none" then gives None). A field typed ``object`` holds data that
    callers pass as Python objects (expected_gradients' references): it cannot come from a string.

    Raises:
        UnknownNameError: for a parameter the method does not declare (with the closest name).
        InputError: for a value that does not convert, or a float that is NaN or infinite.
    """
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise UnknownNameError.for_name("parameter", key, list(fields), where=owner)
        values[key] = _convert(str(fields[key].type), value, key, owner)
    return params_cls(**values)


def _convert(type_name: str, value: Any, key: str, owner: str) -> Any:
    base = type_name.replace("| None", "").replace("None |", "").strip()
    if not isinstance(value, str):
        _check_finite(base, value, value, key, owner)
        return value
    if type_name == "object":
        raise InputError(f"parameter {key!r} of {owner} is supplied by xaibench, not set as text")
    if "None" in type_name and value.strip().lower() == "none":
        return None
    try:
        converted = _to_bool(value) if base == "bool" else _CONVERTERS.get(base, str)(value)
    except ValueError:
        raise InputError(f"parameter {key!r} of {owner} expects {base}, got {value!r}") from None
    _check_finite(base, converted, value, key, owner)
    return converted


def _check_finite(base: str, value: Any, given: Any, key: str, owner: str) -> None:
    """A float parameter must be finite: float("nan") parses, and NaN would flow silently into scores."""
    if base == "float" and isinstance(value, (int, float)) and not math.isfinite(value):
        raise InputError(f"parameter {key!r} of {owner} must be a finite number, got {given!r}")


def describe_params(params_cls: type) -> dict[str, Any]:
    """Parameter name -> default of the parameters a user sets as text, for listings and run.json."""
    return {f.name: f.default for f in dataclasses.fields(params_cls) if str(f.type) != "object"}


# ---------------------------------------------------------------------------------------------
# shared helpers


def as_target(target: torch.Tensor | int, n: int) -> torch.Tensor:
    """Target class per sample as an int64 tensor of shape (n,): on the given tensor's device, or the
    CPU for an int."""
    device = target.device if isinstance(target, torch.Tensor) else "cpu"
    t = torch.as_tensor(target, dtype=torch.long, device=device)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise InputError(f"target must be one int or {n} ints, got shape {tuple(t.shape)}")
    return t.clone()


def modality_of(inputs: torch.Tensor) -> str:
    """Modality by sample rank: (F,) tabular, (C, L) sequence, (C, H, W) image."""
    by_rank = {rank: modality for modality, rank in SAMPLE_RANK.items()}
    if inputs.ndim - 1 not in by_rank:
        raise InputError(f"unsupported sample shape {tuple(inputs.shape[1:])}")
    return by_rank[inputs.ndim - 1]


def input_modality(model: Any, inputs: torch.Tensor) -> str:
    """What ``inputs`` are for ``model``: "text" for a text model's token embeddings
    (``xaibench.models.text``), which are shaped like sequences, else ``modality_of(inputs)``."""
    return getattr(model, "input_modality", None) or modality_of(inputs)


def target_gradients(
    model: torch.nn.Module,
    points: torch.Tensor,
    target: torch.Tensor,
    batch_size: int | None,
) -> torch.Tensor:
    """d logit[target] / d points, one row of ``target`` per row of ``points``, in row chunks.

    Returns a fresh dense tensor the caller may modify in place.
    """
    if batch_size is None or batch_size >= points.shape[0]:
        return _gradient(model, points, target).contiguous()  # one pass: no buffer, no copy
    grads = torch.empty_like(points)
    for rows in row_slices(points.shape[0], batch_size):
        grads[rows] = _gradient(model, points[rows], target[rows])
    return grads


def _gradient(model: torch.nn.Module, points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = points.detach().requires_grad_(True)
        picked = model(x).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, x)
    return grad


def require_gradients(model: torch.nn.Module, probe: torch.Tensor) -> None:
    """Raise IncompatibleError unless the model's output is differentiable w.r.t. ``probe``."""
    with torch.enable_grad():
        out = model(probe.detach().float().requires_grad_(True))
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        raise IncompatibleError("the model gives no gradients; use a perturbation method")
