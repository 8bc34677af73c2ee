"""Options shared by commands that load a model and select data, and their parsing."""

from __future__ import annotations

from typing import Any

import typer

MODEL = typer.Argument(..., metavar="MODEL", help=(
    "Model file: an xaibench checkpoint; safetensors weights or a torch.save'd state_dict with --arch; "
    "with --trust-model also a TorchScript archive, a torch.export program (.pt2) or a pickled nn.Module "
    "(torch.save(model))."))
INDICES = typer.Option(None, "--indices", metavar="LIST", help="Sample positions, e.g. 0,3,10-19.")
TOKENIZER = typer.Option(None, "--tokenizer", metavar="PATH",
                         help="tokenizer.json of a model over token ids that carries none: explain it as text.")
TEXT = typer.Option(None, "--text", metavar="TEXT",
                    help="A sentence to explain with a text model, instead of --data; repeat for more.")
TARGET = typer.Option("pred", "--target", "-t", metavar="pred|label|INDEX",
                      help="Class to explain: the prediction, the label or a class index.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing run directory.")
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
SEED = typer.Option(0, "--seed", min=0, max=2**32 - 1, metavar="N",
                    help="Seed of the random generator (0 to 4294967295).")
PARAM = typer.Option(None, "--param", "-p", metavar="NAME=VALUE",
                     help="Method parameter (repeatable); xaibench methods lists them.")
TRUST = typer.Option(False, "--trust-model",
                     help="Allow formats that can run code when loaded (pickle, TorchScript, .pt2).")
ARCH = typer.Option(None, "--arch", metavar="NAME|MODULE:FACTORY",
                    help="Architecture for bare weights (safetensors, state_dict): a registered name, "
                    "module:factory (the module found from the current folder first) or path/to/file.py:factory.")
ARCH_ARG = typer.Option(None, "--arch-arg", metavar="NAME=VALUE",
                        help="Architecture argument (repeatable), e.g. in_features=30.")
MODALITY = typer.Option(None, "--modality", metavar="image|tabular|sequence|text", help="Override the modality.")
INPUT_SHAPE = typer.Option(None, "--input-shape", metavar="SHAPE", help="Override the sample shape, e.g. 3,64,64.")
CLASSES = typer.Option(None, "--classes", metavar="COUNT|NAMES",
                       help="Class count or comma-separated class names.")
# Preprocessing of the data (xaibench.data.transforms), the same in every command that reads data
MEAN = typer.Option(None, "--mean", metavar="VALUES", show_default="the --normalize preset's, else the model's",
                    help="Per-channel means, e.g. 0.485,0.456,0.406 (one value: every channel); the model gets "
                    "(x - mean) / std.")
STD = typer.Option(None, "--std", metavar="VALUES", show_default="the --normalize preset's, else the model's",
                   help="Per-channel standard deviations, above 0, e.g. 0.229,0.224,0.225.")
NORMALIZE = typer.Option(None, "--normalize", metavar="imagenet|none", show_default="the model's metadata",
                         help="Named mean and std: imagenet, or none (inputs as read); --mean, --std override it.")
RESIZE = typer.Option(None, "--resize", metavar="N|HxW", show_default="the data's own size",
                      help="Resize images (also image arrays in .npz, .pt): N sets the shorter side, keeping "
                      "the aspect ratio; HxW sets height and width.")
CENTER_CROP = typer.Option(None, "--center-crop", metavar="N|HxW", show_default="none",
                           help="Keep the centre N x N (or H x W) pixels of each image, after --resize.")


# Options whose default differs between commands: each command states its own (the numbers are the
# jobs' DEFAULT_SAMPLES and friends, which the CLI cannot import without torch; tests/cli/test_help.py
# holds them equal).
def data_option(split: str, otherwise: str = "") -> Any:
    return typer.Option(None, "--data", "-d", metavar="NAME[:SPLIT]|PATH",
                        show_default=f"the model's dataset, {split} split{otherwise}",
                        help="A built-in dataset (xaibench datasets lists them) or a PATH: image folder, .npz, "
                        ".csv or .pt.")


def n_option(default: str, what: str = "selected samples") -> Any:
    return typer.Option(None, "--n", "-n", min=1, metavar="N", show_default=default,
                        help=f"Use the first N {what} (at least 1).")


def out_option(default: str, what: str = "Run directory") -> Any:
    return typer.Option(None, "--out", "-o", metavar="PATH", show_default=default, help=f"{what} to write.")


def batch_option() -> Any:
    return typer.Option(None, "--batch-size", "-b", min=1, metavar="N", show_default="what --max-memory allows",
                        help="Most rows (samples, path points, noisy or perturbed copies) per forward or backward "
                        "pass (at least 1); replaces the memory budget.")


def format_option(default: str | None = "png") -> Any:
    """``--format png|pdf|svg`` for commands that write figures; a text default means "inherited"."""
    fixed = default == "png"
    return typer.Option("png" if fixed else None, "--format", metavar="png|pdf|svg",
                        show_default=True if fixed else default,
                        help="File format of the figures: png, or pdf / svg for vector output.")


def scale_option(default: str | None = "shared") -> Any:
    """``--scale shared|sample``: one colour scale for all heatmaps of a run, or one per sample."""
    fixed = default == "shared"
    return typer.Option("shared" if fixed else None, "--scale", metavar="shared|sample",
                        show_default=True if fixed else default,
                        help="Heatmap colours: one scale for all samples (comparable) or one per sample.")


DEVICE = typer.Option("auto", "--device", metavar="auto|cpu|cuda|cuda:N|mps",
                      help="Where the model runs: auto takes a CUDA GPU, else Apple's MPS, else the CPU.")
DTYPE = typer.Option("float32", "--dtype", metavar="float32|bfloat16|float16",
                     help="Precision of the model's passes: bfloat16 or float16 run them under autocast (faster on "
                     "GPUs); refused for methods and metrics whose results need float32.")
MAX_MEMORY = typer.Option(
    None, "--max-memory", metavar="SIZE", show_default="$XAIBENCH_MAX_MEMORY, else a share of free memory",
    help="Memory for one pass of the model, e.g. 512M or 2G; sets the rows per pass (see run.json).")


def parse_params(items: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; a malformed item is a usage error."""
    from xaibench.core.errors import InputError

    params: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"parameters are name=value, got {item!r}")
        params[key.strip()] = value.strip()
    return params


def model_source(model: str, trust_model: bool, arch: str | None, arch_arg: list[str] | None,
                 embedding_layer: str | None = None, tokenizer: str | None = None) -> Any:
    """An ``xaibench.models.ModelSource`` from the shared model options."""
    from xaibench.models import ModelSource

    return ModelSource(model, trust_model=trust_model, arch=arch, arch_kwargs=parse_arch_args(arch_arg),
                       embedding_layer=embedding_layer, tokenizer=tokenizer)


def method_takes_layer(method: str) -> bool:
    """Whether the method has a ``layer`` parameter; otherwise --layer names a text model's embedding layer."""
    from dataclasses import fields

    from xaibench.attribution import METHODS

    return any(f.name == "layer" for f in fields(METHODS.get(method).Params))


def parse_named_params(items: list[str] | None) -> dict[str, dict[str, str]]:
    """``["deletion.substrate=blur", ...]`` -> ``{"deletion": {"substrate": "blur"}}``."""
    from xaibench.core.errors import InputError

    named: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        owner, dot, name = key.strip().partition(".")
        if not eq or not dot or not owner or not name:
            raise InputError(f"evaluate parameters are NAME.KEY=VALUE (a method or metric name), got {item!r}")
        named.setdefault(owner, {})[name.strip()] = value.strip()
    return named


def parse_arch_args(items: list[str] | None) -> dict[str, Any] | None:
    """``--arch-arg`` values as Python values: int, then float, then the text itself."""
    if not items:
        return None
    kwargs: dict[str, Any] = {}
    for key, text in parse_params(items).items():
        for convert in (int, float):
            try:
                kwargs[key] = convert(text)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = text
    return kwargs


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    from xaibench.core.errors import InputError

    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise InputError(f"--input-shape takes integers like 3,64,64, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise InputError(f"--input-shape takes positive integers, got {text!r}")
    return shape


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text.strip().isdigit():
        return tuple(str(i) for i in range(int(text)))
    return tuple(name.strip() for name in text.split(","))


def parse_modality(text: str | None) -> str | None:
    from xaibench.core.errors import UnknownNameError
    from xaibench.models.meta import MODALITIES

    if text is not None and text not in MODALITIES:
        raise UnknownNameError.for_name("modality", text, list(MODALITIES))
    return text


def selection(**values: Any) -> Any:
    """Build an ``xaibench.data.prepare.Selection`` from raw CLI values: the selection options, and the
    metadata and preprocessing options where the command has them (absent ones change nothing)."""
    from xaibench.data.prepare import Selection
    from xaibench.data.transforms import from_flags

    preprocessing = from_flags(**{key: values.get(key) for key in PREPROCESSING})
    return Selection(
        data=values["data"], n=values["n"], indices=values["indices"], target=values["target"],
        modality=parse_modality(values.get("modality")), input_shape=parse_shape(values.get("input_shape")),
        classes=parse_classes(values.get("classes")), preprocessing=preprocessing,
        texts=tuple(values["texts"]) if values.get("texts") else None,
    )


PREPROCESSING = ("mean", "std", "normalize", "resize", "center_crop")  # from_flags's keywords
