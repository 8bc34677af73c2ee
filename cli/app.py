"""The typer app and the one place that maps exceptions to messages and exit codes.

Exit codes (DESIGN.md): 0 ok, 1 a run failed, 2 usage / input / config error. Known errors print one
line on stderr; XAIBENCH_DEBUG=1 shows the traceback. Nothing here imports torch: commands import
the library inside their bodies, so ``xaibench --help`` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from typing import Any

import typer

try:  # recent typer vendors click and raises its own copies of click's exceptions
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on click
    from click import exceptions as click_errors

from xaibench.cli import (
    benchmark,
    bee,
    concepts,
    evaluate,
    explain,
    heatmap,
    influence,
    inspect,
    listing,
    llm,
    meta_evaluate,
)
from xaibench.cli.plain_help import PlainGroup

app = typer.Typer(
    name="xaibench",
    cls=PlainGroup,
    help="Explainability and attribution workbench for PyTorch models.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for module in (explain, evaluate, meta_evaluate, benchmark, bee, concepts, influence, llm, heatmap, inspect, listing):
    module.register(app)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from xaibench import __version__

        typer.echo(__version__)
        raise typer.Exit()


class Interrupted(BaseException):
    """Ctrl-C or a termination signal: a BaseException of our own, so that neither typer nor click turns
    it into a silent exit code, and every staged run still removes its temporary folder on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__("interrupted" if signum == signal.SIGINT else "terminated")
        self.exit_code = 128 + signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    if _importing():  # an import cut in half leaves a broken module behind: deliver the signal again soon
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    raise Interrupted(signum)


def _importing() -> bool:
    """Whether a module is being initialised (read without attribute access, which would make a lazily
    imported module load inside the handler)."""
    return any(getattr(object.__getattribute__(module, "__dict__").get("__spec__"), "_initializing", False)
               for module in list(sys.modules.values()))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure ends here as one line on stderr and an exit code (0 ok, 1 a
    run failed, 2 usage or input error, 130 interrupted, 143 terminated)."""
    debug = os.environ.get("XAIBENCH_DEBUG", "") not in ("", "0")
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        handlers = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        _run(argv, debug)
    finally:  # a caller in the same process (tests, an embedding script) gets its handlers back
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _run(argv: list[str] | None, debug: bool) -> None:
    from xaibench.core.distributed import launched, on_cuda, session
    from xaibench.core.errors import XaibenchError

    try:
        if launched():  # under torchrun: join the process group for the command
            args = sys.argv[1:] if argv is None else argv
            _check_distributed(args)
            with session(cuda=on_cuda(args)):
                code = _invoke(argv)
        else:
            code = _invoke(argv)
    except XaibenchError as err:
        _fail(err, err.exit_code, debug)
    except Interrupted as err:
        _fail(err, err.exit_code, debug)
    except click_errors.NoArgsIsHelpError as err:  # a bare command group: its help (rich printed it already)
        if err.format_message().strip():
            typer.echo(err.format_message(), err=True)
        sys.exit(2)
    except click_errors.UsageError as err:
        where = f"{err.ctx.command_path}: " if err.ctx else ""
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
        _fail(click_errors.UsageError(f"{where}{err.format_message()}{hint}"), 2, debug)
    except click_errors.ClickException as err:
        _fail(click_errors.UsageError(err.format_message()), 2, debug)
    except typer.Abort:
        _fail(RuntimeError("aborted"), 1, debug)
    except Exception as err:  # an unexpected failure of a run: exit 1, one line unless debugging
        _fail(err, 1, debug, prefix=f"{type(err).__name__}: ")
    sys.exit(code)


def _invoke(argv: list[str] | None) -> int:
    """Run the app without click's standalone handling (which prints boxes and swallows Ctrl-C);
    xaibench's own warnings print as one line each."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            from xaibench.core.errors import XaibenchWarning

            if issubclass(category, XaibenchWarning):
                sys.stderr.write(f"warning: {message}\n")
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        code = app(args=argv, prog_name="xaibench", standalone_mode=False)
    return code if isinstance(code, int) else 0


#: commands that spread their work over torchrun's processes; the others would only race to write
DISTRIBUTED_COMMANDS = ("explain", "evaluate", "benchmark", "bee", "concepts", "influence", "llm-explain")


def _check_distributed(args: list[str]) -> None:
    from xaibench.core.errors import InputError

    command = next((a for a in args if not a.startswith("-")), None)
    if command is not None and command not in DISTRIBUTED_COMMANDS:
        raise InputError(f"xaibench {command} runs in one process; under torchrun use "
                         f"{', '.join(DISTRIBUTED_COMMANDS)}")


def _fail(err: BaseException, code: int, debug: bool, prefix: str = "") -> None:
    if debug:
        import traceback

        traceback.print_exception(err)
    from xaibench.core.distributed import launched_rank
    from xaibench.core.errors import first_line

    rank = launched_rank()
    sys.stderr.write(f"error: {'' if rank is None else f'[rank {rank}] '}{prefix}{first_line(err)}\n")
    sys.exit(code)
