"""``xaibench llm-explain``: ask an LLM for a tabular model's top features and show its answer next to
the ground truth, with the prompt size and the cost."""

from __future__ import annotations

import sys
from typing import Any

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand

from xaibench.llm.secrets import without_credentials


def register(app: typer.Typer) -> None:
    app.command("llm-explain", cls=PlainCommand)(llm_explain)


def llm_explain(
    model: str = common.MODEL,
    strategy: str = typer.Option("p-icl", "--strategy", "-s", metavar="NAME",
                                 help="Prompting strategy: p-icl, pg-icl, i-icl or e-icl."),
    backend: str = typer.Option("openai", "--backend", metavar="NAME", help="openai, replay or transformers."),
    base_url: str = typer.Option(None, "--base-url", metavar="URL", help="The server's /v1 URL, e.g. "
                                 "http://127.0.0.1:11434/v1 (Ollama)."),
    llm: str = typer.Option(None, "--llm", metavar="NAME", help="The LLM's name on the server (a directory "
                            "for transformers; replay: the recorded one)."),
    api_key_env: str = typer.Option(None, "--api-key-env", metavar="NAME", show_default="OPENAI_API_KEY, sent "
                                    "to OpenAI's own server only", help="Environment variable holding the API "
                                    "key (never the key itself)."),
    transcript: str = typer.Option(None, "--transcript", metavar="PATH", help="transcript.jsonl (or its run "
                                   "directory) for the replay backend."),
    k: int = typer.Option(5, "--k", "-k", min=1, metavar="K", help="How many top features to ask for (at least 1)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Send every request, bypassing the cache."),
    param: list[str] = typer.Option(None, "--param", "-p", metavar="NAME=VALUE", help="Other llm parameters, "
                                    "e.g. names=real, format=raw, timeout=60, prompt_price=2.5 (repeatable)."),
    data: str = common.data_option("test"),
    n: int = common.n_option("1 (each costs a request), or the samples of --indices"),
    indices: str = common.INDICES,
    target: str = common.TARGET,
    out: str = common.out_option("runs/explain-<model>-llm-<time>"),
    scale: str = common.scale_option(),
    fmt: str = common.format_option(),
    overwrite: bool = common.OVERWRITE,
    seed: int = common.SEED,
    batch_size: int = common.batch_option(),
    max_memory: str = common.MAX_MEMORY,
    device: str = common.DEVICE,
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
    """Ask an LLM which features matter (Kroeger et al. 2023) and compare with the ground truth."""
    from xaibench.jobs.explain import ExplainConfig
    from xaibench.jobs.llm import llm_explain as run_llm_explain

    output = Output(json_mode)
    params = {"strategy": strategy, "backend": backend, "k": str(k),
              **({"api_key_env": api_key_env} if api_key_env else {}),
              **({"base_url": base_url} if base_url else {}), **({"llm_model": llm} if llm else {}),
              **({"transcript": transcript} if transcript else {}), **({"cache": "false"} if no_cache else {}),
              **common.parse_params(param)}
    if n is None and indices is None:
        n = 1
    config = ExplainConfig(
        source=common.model_source(model, trust_model, arch, arch_arg), method="llm", params=params,
        out=out, overwrite=overwrite, seed=seed, batch_size=batch_size, max_memory=max_memory, device=device,
        scale=scale, format=fmt,
        selection=common.selection(data=data, n=n, indices=indices, target=target, modality=modality,
                                   input_shape=input_shape, classes=classes, mean=mean, std=std,
                                   normalize=normalize, resize=resize, center_crop=center_crop),
    )
    # run.json records the command line: without the user:password@ of a --base-url
    argv = ["xaibench", *(without_credentials(arg) for arg in sys.argv[1:])]
    result = run_llm_explain(config, argv, on_progress=lambda total: output.progress("llm", total))
    if result is None:  # another process of a torchrun launch: rank 0 reports
        return
    summary = {"run_dir": str(result.run.run_dir), "strategy": result.details["strategy"],
               "model": result.details["model"], "account": result.details["account"],
               "samples": result.samples, "seconds": round(result.run.seconds, 3)}
    output.result(summary, lambda console: print_summary(console, summary))


def print_summary(console: Any, summary: dict[str, Any]) -> None:
    """The human report of a written run. It runs after the run is committed, so it must not fail on
    what the run recorded: texts go through ``_text`` (None as nothing), the console prints no markup,
    and a missing ranking or ground truth is an empty one."""
    from rich.table import Table
    from rich.text import Text

    for sample in summary["samples"]:
        tokens = f", {_text(sample['prompt_tokens'])} tokens" if sample["prompt_tokens"] is not None else ""
        cached = " (cached)" if sample["cached"] else ""
        console.print(Text.assemble((f"sample #{_text(sample['index'])}", "bold"),
                                    f" · {_text(summary['strategy'])} · "
                                    f"prompt {_text(sample['prompt_chars'])} characters{tokens}{cached}"))
        console.print("  reply:")
        for line in _text(sample["reply"]).strip().splitlines()[-12:]:
            console.print(f"    {line}", highlight=False)
        if not sample["ok"]:
            console.print(Text.assemble("  ", ("not parsed", "red"), f": {_text(sample['reason'])}"))
        ranking, truth = [_text(name) for name in sample["ranking"] or []], sample["ground_truth"] or []
        table = Table("rank", "LLM", "ground truth (coefficients x range)" if truth else "ground truth",
                      box=None, padding=(0, 2))
        for i in range(max(len(ranking), len(truth))):
            llm_name = ranking[i] if i < len(ranking) else ""
            true_name = _text(truth[i]) if i < len(truth) else ("n/a (not a linear model)"
                                                                 if not truth and i == 0 else "")
            mark = " ✓" if truth and llm_name and llm_name == true_name else ""
            table.add_row(str(i + 1), Text(llm_name + mark), Text(true_name))
        console.print(table)
        if sample["feature_agreement"] is not None and sample["rank_agreement"] is not None:
            console.print(f"  feature agreement {sample['feature_agreement']:.2f} · rank agreement "
                          f"{sample['rank_agreement']:.2f}")
    account = summary["account"]
    console.print(f"requests: {account['sent']} sent, {account['cached']} cached · tokens: "
                  f"{account['prompt_tokens']} prompt + {account['completion_tokens']} completion · "
                  f"cost: ${account['cost_usd']:.4f}")
    console.print(f"run directory: {_text(summary['run_dir'])}  (transcript.jsonl replays it)")


def _text(value: Any) -> str:
    """A recorded value as text: None as nothing."""
    return "" if value is None else str(value)
