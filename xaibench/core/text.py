"""Names and paths made safe to show, draw and write: file names need not be UTF-8."""

from __future__ import annotations

import os


def printable(text: str | os.PathLike[str]) -> str:
    """``text`` (a name or path) safe to show, draw and write as UTF-8.

    A file name that is not UTF-8 reaches Python with its bytes as lone surrogates (``os.fsdecode``):
    they are shown as ``\\xNN``; other lone surrogates and control characters as Python escapes.
    """
    text = os.fspath(text)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no undecodable byte explains: escaped below
        pass
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
