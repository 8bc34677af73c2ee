"""``xaibench bee pretrain`` (learn a BEE policy on training data) and ``bee report`` (what it learned)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand, PlainGroup

if TYPE_CHECKING:
    from pathlib import Path

bee_app = typer.Typer(cls=PlainGroup, help="BEE: learn and inspect metric-adapted baseline policies.",
                      no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bee_app, name="bee")


@bee_app.command("pretrain", cls=PlainCommand)
def pretrain(
    model: str = common.MODEL,
    metric: str = typer.Option("deletion", "--metric", metavar="NAME", help="Metric the policy adapts to."),
    data: str = common.data_option("train"),
    n: int = common.n_option("256, or the samples of --indices", "training inputs"),
    indices: str = common.INDICES,
    target: str = common.TARGET,
    param: list[str] = typer.Option(None, "--param", "-p", metavar="NAME=VALUE", help="bee parameter, e.g. "
                                    "rounds=4, arms=zero,blur, n_steps=16 (repeatable)."),
    out: str = common.out_option("policies/<model>-<metric>.safetensors", "Policy file"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing policy file."),
    seed: int = common.SEED,
    batch_size: int = common.batch_option(),
    max_memory: str = common.MAX_MEMORY,
    device: str = common.DEVICE,
    dtype: str = common.DTYPE,
    json_mode: bool = common.JSON,
    trust_model: bool = common.TRUST,
    arch: str = common.ARCH,
    arch_arg: list[str] = common.ARCH_ARG,
    modality: str = common.MODALITY,
    input_shape: str = common.INPUT_SHAPE,
    classes: str = common.CLASSES,
    mean: str = common.MEAN,
    std: str = common.STD,
    normalize: str = common.NORMALIZE,
    resize: str = common.RESIZE,
    center_crop: str = common.CENTER_CROP,
) -> None:
    """Learn BEE's baseline policy for a metric on training data (default: the model's train split)."""
    from xaibench.jobs.bee import PretrainConfig, pretrain_policy

    output = Output(json_mode)
    config = PretrainConfig(
        source=common.model_source(model, trust_model, arch, arch_arg), metric=metric,
        params=common.parse_params(param), out=out, overwrite=overwrite, seed=seed, batch_size=batch_size,
        max_memory=max_memory, device=device, dtype=dtype,
        selection=common.selection(data=data, n=n, indices=indices, target=target, modality=modality,
                                   input_shape=input_shape, classes=classes, mean=mean, std=std,
                                   normalize=normalize, resize=resize, center_crop=center_crop),
    )
    with output.progress(f"bee pretrain ({metric})", None):
        summary = pretrain_policy(config)

    def human(console: object) -> None:
        console.print(f"Learned a policy for {metric} from {summary['samples']} inputs in {summary['seconds']:.1f} s")
        console.print(f"  policy: {summary['policy']}")
        for family, share in summary["distribution"].items():
            console.print(f"  {family:<14} {share:6.1%}")

    output.result(summary, human)


def chart_destination(out: str | None, fmt: str | None) -> tuple[Path, str]:
    """The chart's path and format: --out as given (default bee_arms.<format>); the format from --format,
    else from --out's suffix, else png. A --format that contradicts --out's suffix is a usage error."""
    from pathlib import Path

    from xaibench.core.errors import InputError
    from xaibench.report.style import DEFAULT_FORMAT, FORMATS, check_format

    named = Path(out).suffix.lower().lstrip(".") if out else ""
    chosen = check_format(fmt) if fmt else named if named in FORMATS else DEFAULT_FORMAT
    if named in FORMATS and named != chosen:
        raise InputError(f"--out {out} names a .{named} file but --format is {chosen}")
    return Path(out) if out else Path(f"bee_arms.{chosen}"), chosen


@bee_app.command("report", cls=PlainCommand)
def report(
    model: str = common.MODEL,
    policies: list[str] = typer.Argument(..., metavar="POLICY",
                                        help="Policy files from bee pretrain (one per metric)."),
    data: str = common.data_option("test"),
    n: int = common.n_option("256", "inputs, whose contexts are charted"),
    out: str = typer.Option(None, "--out", "-o", metavar="PATH", show_default="bee_arms.<format>",
                            help="Chart file to write."),
    fmt: str = common.format_option("png, or what --out's suffix names"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing chart written by xaibench."),
    seed: int = common.SEED,
    batch_size: int = common.batch_option(),
    max_memory: str = common.MAX_MEMORY,
    device: str = common.DEVICE,
    json_mode: bool = common.JSON,
    trust_model: bool = common.TRUST,
    modality: str = common.MODALITY,
    input_shape: str = common.INPUT_SHAPE,
    classes: str = common.CLASSES,
    mean: str = common.MEAN,
    std: str = common.STD,
    normalize: str = common.NORMALIZE,
    resize: str = common.RESIZE,
    center_crop: str = common.CENTER_CROP,
) -> None:
    """Chart the learned baseline distribution of each policy (metric) on held-out data."""

    from xaibench.core.runs import check_file_destination
    from xaibench.jobs.bee import arm_distributions
    from xaibench.report.arms import is_arm_chart, write_arm_chart
    target, fmt = chart_destination(out, fmt)
    check_file_destination(target, overwrite, is_arm_chart, "a chart")
    selection = common.selection(data=data, n=n, indices=None, target="pred", modality=modality,
                                 input_shape=input_shape, classes=classes, mean=mean, std=std,
                                 normalize=normalize, resize=resize, center_crop=center_crop)
    measured = arm_distributions(model, policies, selection, batch_size, seed, trust_model, max_memory, device)
    shares = measured.distributions
    chart = write_arm_chart(shares, target, model=measured.model, samples=measured.samples, fmt=fmt)

    def human(console: object) -> None:
        for metric, families in shares.items():
            console.print(f"{metric}: " + ", ".join(f"{f} {p:.0%}" for f, p in families.items()))
        console.print(f"Chart: {chart}")

    Output(json_mode).result({"chart": str(chart), "distributions": shares}, human)
