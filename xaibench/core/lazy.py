"""Deferred imports, so that listing methods or metrics (and ``xaibench --help``) never imports torch.

Modules whose entries must be listable without torch bind ``torch = lazy_import("torch")`` at module
level; the real import happens on first attribute access, i.e. when a method actually runs.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """Return ``name`` as a module object that is imported on first attribute access."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
