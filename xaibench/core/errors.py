"""Errors that the CLI maps to a one-line message and an exit code (DESIGN.md: 2 usage/input, 1 run)."""

from __future__ import annotations

import difflib


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


class XaibenchError(Exception):
    """Base of the errors a user can cause; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class InputError(XaibenchError):
    """Bad input: a missing or corrupt file, a shape that does not fit, NaN values, a bad target."""


class UnknownNameError(InputError):
    """An unknown method, dataset, parameter or format name."""

    @classmethod
    def for_name(cls, kind: str, name: str, choices: list[str], where: str = "") -> UnknownNameError:
        matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
        hint = f"; did you mean {matches[0]!r}?" if matches else ""
        known = "" if matches or len(choices) > 30 else f" (known: {', '.join(sorted(choices))})"
        context = f" of {where}" if where else ""
        return cls(f"unknown {kind} {name!r}{context}{hint}{known}")


class UntrustedModelError(InputError):
    """A file that would execute code when loaded, refused without --trust-model."""


class IncompatibleError(InputError):
    """A method that does not fit the model or modality (gradcam on a tabular MLP, ...)."""


class RunExistsError(InputError):
    """The output directory exists and --overwrite was not given."""


class XaibenchWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one line."""


class RunFailedError(XaibenchError):
    """A run that started but failed, or a threshold that was not met."""

    exit_code = 1
