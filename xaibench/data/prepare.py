"""From a model file and a data spec to validated model inputs, predictions and targets.

Shared by every command that runs a model: it completes the model's metadata from the data and the
user's flags, selects samples, normalises them as the model expects, checks that they fit, and resolves
the target (pred, label or a class index).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError, first_line
from xaibench.core.memory import RowPlan
from xaibench.data import DATASETS, Dataset, load_data, select
from xaibench.data.text_files import text_dataset
from xaibench.data.text_inputs import tokenised
from xaibench.data.transforms import Preprocessing
from xaibench.models import LoadedModel, ModelMeta
from xaibench.models.meta import SAMPLE_RANK

_SHOWN_SAMPLES = 8  # sample indices named in an error; more are counted


@dataclass(frozen=True)
class Selection:
    """What the user asked for: data spec, sample selection, target, metadata overrides and the
    preprocessing of the data (resize, crop, normalisation)."""

    data: str | None = None
    n: int | None = None
    indices: str | None = None
    target: str = "pred"
    modality: str | None = None
    input_shape: tuple[int, ...] | None = None
    classes: tuple[str, ...] | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    texts: tuple[str, ...] | None = None  # --text: sentences to explain instead of --data


@dataclass(frozen=True)
class Prepared:
    """Validated inputs in model space with the model's view of them; ``preprocessing`` is what made
    ``data`` from the files (other data the job reads, such as reference samples, gets the same).
    ``inputs``, ``probabilities``, ``predictions`` and ``targets`` are on the model's device; ``data``
    stays on the CPU as read."""

    meta: ModelMeta
    data: Dataset
    inputs: torch.Tensor
    probabilities: torch.Tensor
    predictions: torch.Tensor
    targets: torch.Tensor
    preprocessing: Preprocessing = field(default_factory=Preprocessing)


def default_split(selection: Selection, meta: ModelMeta, split: str) -> Selection:
    """``selection`` reading the model's own dataset in ``split`` when it names no data (``prepare``
    defaults to the test split; training-data commands ask for "train")."""
    if selection.data is None and meta.dataset:
        return replace(selection, data=f"{meta.dataset}:{split}")
    return selection


def prepare(model: LoadedModel, selection: Selection, batch_size: int | RowPlan | None = None) -> Prepared:
    """Load, preprocess and check the data for ``model``; compute predictions and targets.

    The selected samples are resized and cropped as ``selection.preprocessing`` asks, then normalised
    with its mean and std where given (else the model's); the returned meta records what was used.

    Raises:
        InputError: no data named, empty selection, NaN inputs, preprocessing that does not fit the
            data (a resize of tabular data, a crop larger than the images, a --mean or --std whose
            count is neither 1 nor the channel count), a shape the model does not take,
            NaN or infinite outputs, a target outside the classes or "label" on unlabelled data,
            class names that do not fit the outputs, or labels that are names (class folders, string
            labels) that name no class of the model or cannot be matched because it names none.
    """
    meta = model.meta.merged(modality=selection.modality, input_shape=selection.input_shape,
                             class_names=selection.classes)
    steps = selection.preprocessing
    meta = replace(meta, **dict(zip(("mean", "std"), steps.statistics(meta.mean, meta.std), strict=True)))
    data, spec = _selected(model, selection, meta)
    text_model = getattr(model.module, "input_modality", None) == "text"
    if text_model:
        data = tokenised(data, model.module, spec)
        inputs = model.module.embed(data.x.long().to(model.device))
        sample_shape = tuple(inputs.shape[1:])
    else:
        data, sample_shape = _checked(steps.apply(data), meta, steps, spec)
        inputs = normalise(data.x.to(model.device), meta)
    logits = forward(model.module, inputs, batch_size)
    _check_finite(logits, data, spec)
    names, source = _class_names(model.meta, selection, data, spec, logits.shape[1])
    data = _with_class_indices(data, names, source, spec)
    meta = meta.merged(modality=meta.modality or data.modality, input_shape=sample_shape, class_names=names,
                       feature_names=meta.feature_names or data.feature_names)
    if data.y is not None and not 0 <= int(data.y.min()) <= int(data.y.max()) < logits.shape[1]:
        raise InputError(f"labels of {spec} fall outside the model's {logits.shape[1]} classes")
    probabilities = logits.softmax(dim=1)
    predictions = probabilities.argmax(dim=1)
    targets = resolve_target(selection.target, predictions, data, logits.shape[1]).to(logits.device)
    return Prepared(meta, data, inputs, probabilities, predictions, targets, steps)


def selected_data(model: LoadedModel, selection: Selection) -> Dataset:
    """The selected samples as read, before preprocessing, tokenising or any model pass."""
    return _selected(model, selection, model.meta.merged(modality=selection.modality))[0]


def _selected(model: LoadedModel, selection: Selection, meta: ModelMeta) -> tuple[Dataset, str]:
    """The selected samples as read (not preprocessed) and the spec they were read from.

    Raises:
        InputError: no data named, text given to a model that does not read it, or a bad selection.
    """
    spec = "--text" if selection.texts else selection.data or (f"{meta.dataset}:test" if meta.dataset else None)
    if spec is None:
        raise InputError("the model names no dataset; pass --data NAME[:SPLIT] or --data PATH")
    text_model = getattr(model.module, "input_modality", None) == "text"
    if meta.modality == "text" and not text_model:
        raise InputError("--modality text needs a text model: a Hugging Face directory or a checkpoint with a "
                         "tokenizer")
    if text_model and meta.modality != "text":
        raise InputError(f"this is a text model; --modality {meta.modality} does not fit it")
    if selection.texts and selection.data:
        raise InputError("give either --text or --data, not both")
    if selection.texts and not text_model:
        raise InputError("--text needs a text model; this model reads "
                         f"{model.meta.modality or 'numbers'} data: use --data")
    source = text_dataset(list(selection.texts)) if selection.texts else load_data(spec)
    return select(source, n=selection.n, indices=selection.indices), spec


def _checked(data: Dataset, meta: ModelMeta, steps: Preprocessing, spec: str) -> tuple[Dataset, tuple[int, ...]]:
    """``data`` and its sample shape, once its values are finite and its shape fits the model's."""
    if not torch.isfinite(data.x).all():
        raise InputError(f"the data {spec} contains NaN or infinite values")
    if data.texts is not None:
        raise InputError(f"{spec} is text, which needs a text model (a Hugging Face directory or a checkpoint "
                         "with a tokenizer)")
    steps.check_channels(int(data.x.shape[1]), data.modality)
    sample_shape = tuple(data.x.shape[1:])
    if meta.modality is not None and SAMPLE_RANK.get(meta.modality) != len(sample_shape):
        raise InputError(f"modality {meta.modality!r} does not fit samples of shape {sample_shape} "
                         "(image: C,H,W; sequence: C,L; tabular: F)")
    if meta.input_shape is not None and tuple(meta.input_shape) != sample_shape:
        raise InputError(f"data samples have shape {sample_shape} but the model expects "
                         f"{tuple(meta.input_shape)}{_resize_hint(sample_shape, tuple(meta.input_shape))}")
    return data, sample_shape


def _resize_hint(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """For images of another size: the --resize that fits them."""
    if len(shape) != 3 or len(expected) != 3 or shape[0] != expected[0]:
        return ""
    return f"; --resize {expected[1]}x{expected[2]} resizes the images to fit"


def _class_names(model_meta: ModelMeta, selection: Selection, data: Dataset, spec: str,
                 outputs: int) -> tuple[tuple[str, ...], str]:
    """The model's class names and where they came from, first found of: --classes, the model's
    metadata, the data's own (classes.txt, a class_names array, a built-in dataset), the data's label
    names when there is one per output, else "0".."outputs-1"."""
    declared = None if data.class_names is None else (data.class_names, _declared_source(data, spec))
    if selection.classes:
        names, source = selection.classes, "--classes"
    elif model_meta.class_names:
        names, source = model_meta.class_names, "the model's metadata"
        if data.label_names is not None and declared is not None and declared[0] != names:
            # the names the labels are matched against would silently be the metadata's
            raise InputError(f"{declared[1]} lists the classes {_listed(declared[0])} but the model's "
                             f"metadata names them {_listed(names)}; make them agree or pass --classes")
    elif declared is not None:
        names, source = declared
    elif data.label_names is not None:
        if len(data.label_names) != outputs:
            raise InputError(_no_names_for_labels(data, spec, outputs))
        names, source = data.label_names, f"the {_label_kind(spec)}s of {data.name}"
    else:
        names, source = tuple(str(i) for i in range(outputs)), "the model's outputs"
    if len(names) != outputs:
        raise InputError(f"the model has {outputs} outputs but {len(names)} class names were given by "
                         f"{source}")
    return names, source


def _with_class_indices(data: Dataset, names: tuple[str, ...], source: str, spec: str) -> Dataset:
    """``data`` with the model's class names and, where its labels are names, labels that are the
    indices of those names among ``names`` (not their positions among the data's own names)."""
    if data.label_names is None:
        return replace(data, class_names=names)
    unknown = [name for name in data.label_names if name not in names]
    if unknown:
        kind = _label_kind(spec) + ("s" if len(unknown) > 1 else "")
        verb = "name" if len(unknown) > 1 else "names"
        raise InputError(f"{data.name}: {kind} {', '.join(map(repr, unknown))} {verb} no class of the "
                         f"model; its {len(names)} classes (from {source}) are {_listed(names)}")
    twice = next((name for name in data.label_names if names.count(name) > 1), None)
    if twice is not None:
        raise InputError(f"the class name {twice!r} of {data.name} is given twice by {source}")
    lookup = torch.tensor([names.index(name) for name in data.label_names], dtype=torch.long, device="cpu")
    return replace(data, y=lookup[data.y], class_names=names, label_names=None)


def _no_names_for_labels(data: Dataset, spec: str, outputs: int) -> str:
    """Why labels that are names cannot be matched: the model names no classes and the data has fewer
    (or more) names than outputs."""
    kind = _label_kind(spec)
    label_names = data.label_names or ()
    where, fix = "none in its metadata, no --classes", f"pass --classes with {outputs} names in output order"
    if kind == "class folder":
        where += f", no {data.name}/classes.txt"
        fix += f" or write them to {data.name}/classes.txt, one per line"
    return (f"{data.name} has {len(label_names)} {kind}s ({_listed(label_names)}) but the model has "
            f"{outputs} outputs and no class names to match them to ({where}); {fix}")


def _label_kind(spec: str) -> str:
    return "class folder" if Path(spec).expanduser().is_dir() else "label"


def _declared_source(data: Dataset, spec: str) -> str:
    """Where the data's own class names came from, for messages."""
    if Path(spec).expanduser().is_dir():
        return f"{data.name}/classes.txt"
    return f"the dataset {data.name}" if data.name in DATASETS else f"the class_names of {data.name}"


def _listed(names: tuple[str, ...]) -> str:
    """The first names, comma-separated, then how many more."""
    if len(names) <= _SHOWN_SAMPLES:
        return ", ".join(names)
    return f"{', '.join(names[:_SHOWN_SAMPLES])} and {len(names) - _SHOWN_SAMPLES} more"


def _check_finite(logits: torch.Tensor, data: Dataset, spec: str) -> None:
    """Refuse outputs that are NaN or infinite (NaN probabilities would pass for a run), naming the
    samples by their index in the data."""
    bad = data.indices[~torch.isfinite(logits).all(dim=1).cpu()].tolist()
    if not bad:
        return
    shown = ", ".join(str(i) for i in bad[:_SHOWN_SAMPLES])
    if len(bad) > _SHOWN_SAMPLES:
        which = f"{len(bad)} samples ({shown} and {len(bad) - _SHOWN_SAMPLES} more)"
    else:
        which = f"sample{'s' if len(bad) > 1 else ''} {shown}"
    raise InputError(f"the model's outputs are NaN or infinite for {which} of {spec} "
                     "(NaN weights, or inputs too large for it)")


def normalise(x: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """(x - mean) / std per channel when the model's metadata asks for it."""
    stats = _channel_stats(x, meta)
    return x if stats is None else (x - stats[0]) / stats[1]


def denormalise(x: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """Inverse of ``normalise``: model inputs back to raw values for display."""
    stats = _channel_stats(x, meta)
    return x if stats is None else x * stats[1] + stats[0]


def _channel_stats(x: torch.Tensor, meta: ModelMeta) -> tuple[torch.Tensor, torch.Tensor] | None:
    if meta.mean is None and meta.std is None:
        return None
    channels = x.shape[1]
    for key, values in (("mean", meta.mean), ("std", meta.std)):
        if values is not None and len(values) not in (1, channels):
            raise InputError(f"the model's {key} has {len(values)} values, but the samples have {channels} "
                             f"channels (give 1 or {channels})")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = torch.tensor(meta.mean or (0.0,), dtype=x.dtype, device=x.device).reshape(shape)
    std = torch.tensor(meta.std or (1.0,), dtype=x.dtype, device=x.device).reshape(shape)
    return mean, std


def forward(module: torch.nn.Module, inputs: torch.Tensor, batch_size: int | RowPlan | None) -> torch.Tensor:
    """Logits for ``inputs`` in row chunks (``batch_size`` rows, or what a ``RowPlan`` allows);
    InputError when the model does not take them."""
    if isinstance(batch_size, RowPlan):
        try:
            batch_size = batch_size.rows(module, inputs[:1])
        except (RuntimeError, ValueError, TypeError, IndexError):
            batch_size = 1  # the model does not take these inputs: the first pass below says why
    outputs = []
    with torch.no_grad():
        for rows in row_slices(inputs.shape[0], batch_size):
            try:
                out = module(inputs[rows])
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                raise InputError(f"the model does not accept inputs of shape "
                                 f"{tuple(inputs.shape[1:])}: {first_line(err)}") from None
            if not isinstance(out, torch.Tensor) or out.ndim != 2:
                raise InputError("the model must return logits of shape (batch, classes)")
            outputs.append(out.float())
    return torch.cat(outputs)


def resolve_target(spec: str, predictions: torch.Tensor, data: Dataset, classes: int) -> torch.Tensor:
    """Target class per sample from "pred", "label" or a class index."""
    if spec == "pred":
        return predictions.clone()
    if spec == "label":
        if data.y is None:
            raise InputError("--target label needs labelled data; this data has no labels")
        return data.y.clone()
    try:
        index = int(spec)
    except ValueError:
        raise InputError(f"--target must be pred, label or a class index, got {spec!r}") from None
    if not 0 <= index < classes:
        raise InputError(f"target {index} is outside the model's {classes} classes (0..{classes - 1})")
    return torch.full_like(predictions, index)

