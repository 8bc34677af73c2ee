"""The typer app and the one place that maps exceptions to messages and exit codes.

Exit codes (DESIGN.md): 0 ok, 1 a run failed, 2 usage / input / config error. Known errors print one
line on stderr; XAIBENCH_DEBUG=1 shows the traceback. Nothing here imports torch: commands import
the library inside their bodies, so ``xaibench --help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from xaibench.cli import bee, concepts, evaluate, explain, heatmap, influence, inspect, listing, llm

app = typer.Typer(
    name="xaibench",
    help="Explainability and attribution workbench for PyTorch models.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for module in (explain, evaluate, bee, concepts, influence, llm, heatmap, inspect, listing):
    module.register(app)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from xaibench import __version__

        typer.echo(__version__)
        raise typer.Exit()


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Typer handles usage errors (exit 2) and --help; we handle the rest."""
    from xaibench.distributed import launched, session
    from xaibench.errors import XaibenchError

    debug = os.environ.get("XAIBENCH_DEBUG", "") not in ("", "0")
    try:
        if launched():  # under torchrun: join the process group for the command
            _check_distributed(sys.argv[1:] if argv is None else argv)
            with session():
                app(args=argv, prog_name="xaibench")
        else:
            app(args=argv, prog_name="xaibench")
    except XaibenchError as err:
        _fail(err, err.exit_code, debug)
    except KeyboardInterrupt:
        _fail(KeyboardInterrupt("interrupted"), 1, debug)
    except Exception as err:  # an unexpected failure of a run: exit 1, one line unless debugging
        _fail(err, 1, debug, prefix=f"{type(err).__name__}: ")


#: commands that spread their work over torchrun's processes; the others would only race to write
DISTRIBUTED_COMMANDS = ("explain", "evaluate", "bee", "concepts", "influence", "llm-explain")


def _check_distributed(args: list[str]) -> None:
    from xaibench.errors import InputError

    command = next((a for a in args if not a.startswith("-")), None)
    if command is not None and command not in DISTRIBUTED_COMMANDS:
        raise InputError(f"xaibench {command} runs in one process; under torchrun use "
                         f"{', '.join(DISTRIBUTED_COMMANDS)}")


def _fail(err: BaseException, code: int, debug: bool, prefix: str = "") -> None:
    if debug:
        import traceback

        traceback.print_exception(err)
    from xaibench.distributed import launched_rank
    from xaibench.errors import first_line

    rank = launched_rank()
    sys.stderr.write(f"error: {'' if rank is None else f'[rank {rank}] '}{prefix}{first_line(err)}\n")
    sys.exit(code)
