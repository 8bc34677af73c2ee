"""``--help`` in plain words: the command and group classes every xaibench command is built with.

Recent typer prints a Python type beside each parameter (``<bool>`` on flags, ``<list[str]>``,
``<int range> [x>=1]``) and wraps text defaults in parentheses. Here a value option shows its metavar
(N, NAME, PATH, ...), a flag and an argument show nothing beside their name, ranges are stated in the
help words, and a default computed by the job (``show_default="..."``) shows as written.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


class _PlainOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.is_flag else self.metavar

    def _get_number_range_help_str(self) -> str | None:
        return None

    def _get_default_string(self, *, ctx: Any, show_default_is_str: bool, default_value: Any) -> str:
        if show_default_is_str:
            return str(self.show_default)
        return super()._get_default_string(ctx=ctx, show_default_is_str=False, default_value=default_value)


class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the metavar (MODEL, RUN_DIR) already stands in the name column


_PLAIN = {TyperOption: _PlainOption, TyperArgument: _PlainArgument}


def _plain(params: list[Any]) -> list[Any]:
    """The same parameter objects, shown in plain words. typer builds parameters itself and offers no
    way to choose their class, so the class is swapped: only help methods differ, parsing and click's
    error messages stay typer's."""
    for param in params:
        param.__class__ = _PLAIN.get(type(param), type(param))
    return params


class PlainCommand(TyperCommand):
    """A typer command whose ``--help`` names no Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))  # includes the lazily made --help option


class PlainGroup(TyperGroup):
    """A typer group whose own options (``--version``, ``--help``) name no Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))
