"""One generic registry for methods, metrics, model formats, datasets, baselines and LLM backends.

Entries are registered with a decorator and carry their metadata as class (or function) attributes,
so that reports and listings read metadata and never hard-code names. A registry can also name the
modules that fill it; they are imported on first use, which keeps `import xaibench` light.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from xaibench.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry mapping filled by ``@registry.register("name")``.

    Args:
        kind: what the entries are ("method", "metric", ...), used in error messages.
        modules: modules whose import registers the entries; imported lazily on first lookup.
    """

    def __init__(self, kind: str, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._modules = modules
        self._loaded = not modules
        self._entries: dict[str, T] = {}

    def register(self, name: str, **metadata: Any) -> Callable[[T], T]:
        """Decorator registering ``entry`` under ``name``; keyword metadata is set as attributes.

        Raises:
            ValueError: if ``name`` is already taken.
        """

        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"duplicate {self.kind} name {name!r}")
            for key, value in metadata.items():
                setattr(entry, key, value)
            setattr(entry, "name", name)
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str) -> T:
        """Return the entry called ``name``.

        Raises:
            UnknownNameError: with the closest known name as a suggestion.
        """
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError.for_name(self.kind, name, list(self._entries)) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a glob ``pattern`` (a comma-separated list of globs is accepted)."""
        self._load()
        globs = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
        return sorted(n for n in self._entries if any(fnmatch.fnmatchcase(n, g) for g in globs))

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.list()]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            importlib.import_module(module)

