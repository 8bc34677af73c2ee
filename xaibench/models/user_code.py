"""The user's own code: architecture factories and the classes of pickled models, imported as Python does.

A console script starts with its own folder, not the current one, first on ``sys.path``, so a module
beside the user's model file would not be found. xaibench imports user code the way ``python -m`` sees it:
the current folder (or, for ``path/to/file.py``, that file's folder) first on the import path, only while
importing, and ``sys.path`` is restored afterwards. Whether such code may be imported at all is decided
by the caller (``xaibench.models.checkpoint``: ``--arch`` from the user, or ``--trust-model``).
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import InputError, first_line
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@contextlib.contextmanager
def first_on_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path`` inside the block, and removed after it, even on error."""
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # a module written a moment ago may be missing from a finder's cache
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def import_user_module(spec: str) -> types.ModuleType:
    """The module ``spec`` names: a dotted module name, looked up from the current folder first, or a
    ``path/to/file.py`` (the file's folder first, so that its sibling modules import too).

    Raises:
        InputError: the module or file is not found, or importing it fails (with the reason and the fix).
    """
    if spec.endswith(".py") or "/" in spec:
        return _import_file(Path(spec))
    with first_on_path(Path.cwd()):
        return _import(spec, f"module {spec!r}", _not_found_hint(spec))


def _not_found_hint(name: str) -> str:
    top = name.split(".")[0]
    return (f"xaibench looks in the current folder ({Path.cwd()}) and on PYTHONPATH: run from the folder "
            f"that holds {top}.py (or package {top}/), add that folder to PYTHONPATH, "
            f"or name the file: --arch path/to/{top}.py:FACTORY")


def _import_file(path: Path) -> types.ModuleType:
    if path.suffix != ".py" or not path.is_file():
        raise InputError(f"{path} is not a Python file (an architecture file is path/to/file.py:FACTORY)")
    if not path.stem.isidentifier():
        raise InputError(f"{path}: {path.stem!r} cannot be imported as a Python module; "
                         "rename the file to letters, digits and underscores")
    with first_on_path(path.parent):
        module = _import(path.stem, f"{path}", "")
    origin = getattr(module, "__file__", None)
    if origin is None or Path(origin).resolve() != path.resolve():
        raise InputError(f"{path}: the module name {path.stem!r} is already taken by {origin or 'a built-in'}; "
                         "rename the file")
    return module


def _import(name: str, what: str, not_found_hint: str) -> types.ModuleType:
    """``importlib.import_module(name)``; every failure of the user's code becomes an InputError."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name == error.name or name.startswith(f"{error.name}.")):
            hint = f"; {not_found_hint}" if not_found_hint else ""
            raise InputError(f"cannot import {what} ({error}){hint}") from error
        raise InputError(f"importing {what} failed: it needs module {error.name!r} ({error}); "
                         "install it or add its folder to PYTHONPATH") from error
    except Exception as error:  # the user's module runs arbitrary code: any failure is reported
        raise InputError(f"importing {what} failed: {type(error).__name__}: {first_line(error)}") from error


class _ClassUnavailable(Exception):
    """A class or function a pickle references could not be found (carries what and why)."""

    def __init__(self, module: str, name: str, error: Exception) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name, self.error = module, name, error


class _ReportingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except Exception as error:  # the lookup imports user code: any failure is the pickle's need
            raise _ClassUnavailable(module, name, error) from error


#: a stand-in for the ``pickle`` module, for ``torch.load(pickle_module=...)``
_REPORTING_PICKLE = types.SimpleNamespace(__name__="pickle", Unpickler=_ReportingUnpickler, load=pickle.load)


def load_pickled(path: Path) -> Any:
    """``torch.load(path, weights_only=False)`` with the current folder first on the import path; a class
    the pickle needs but cannot find is named, with the fix. Only for files the user trusts.

    Raises:
        InputError: a class or module the pickle references cannot be imported.
    """
    try:
        with first_on_path(Path.cwd()):
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_REPORTING_PICKLE)
    except _ClassUnavailable as missing:
        raise InputError(f"{path}: {_missing_class_reason(missing)}") from missing.error


def _missing_class_reason(missing: _ClassUnavailable) -> str:
    module, name, error = missing.module, missing.name, missing.error
    if module == "__main__":
        return (f"the pickled model's class {name!r} was defined in the script that saved it (__main__) and "
                "cannot be found elsewhere; move the class into a module, or save model.state_dict() and "
                "load it with --arch module:factory")
    if isinstance(error, ModuleNotFoundError) and error.name is not None and (
            module == error.name or module.startswith(f"{error.name}.")):
        return (f"the pickled model needs module {module!r} ({error}); run from the folder that holds it "
                "or add it to PYTHONPATH")
    if isinstance(error, AttributeError):
        return (f"the pickled model needs {name!r} from module {module!r}, which has no such name "
                f"({getattr(sys.modules.get(module), '__file__', None) or module}); use the version of "
                "the module the model was saved with")
    return (f"the pickled model needs module {module!r}, whose import failed: "
            f"{type(error).__name__}: {first_line(error)}")
