"""The one generic registry: decorator registration, duplicates, lookups with suggestions, globs, lazy fill."""

from __future__ import annotations

import sys

import pytest

from xaibench.core.errors import UnknownNameError
from xaibench.core.registry import Registry

LATE = Registry("thing", modules=("xaibench_late_entries",))


def test_register_sets_name_and_metadata():
    things: Registry[type] = Registry("thing")

    @things.register("alpha", category="greek", higher_is_better=True)
    class Alpha:
        pass

    assert things.get("alpha") is Alpha
    assert (Alpha.name, Alpha.category, Alpha.higher_is_better) == ("alpha", "greek", True)
    assert "alpha" in things and len(things) == 1 and list(things) == ["alpha"]


def test_duplicate_names_raise():
    things: Registry[object] = Registry("thing")
    things.register("a")(type("A", (), {}))
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        things.register("a")(type("B", (), {}))


def test_unknown_name_suggests_the_closest():
    things: Registry[object] = Registry("method")
    for name in ("saliency", "smoothgrad", "occlusion"):
        things.register(name)(type(name, (), {}))
    with pytest.raises(UnknownNameError, match="unknown method 'salency'; did you mean 'saliency'"):
        things.get("salency")
    with pytest.raises(UnknownNameError, match=r"unknown method 'zzz' \(known: occlusion, saliency, "):
        things.get("zzz")


def test_list_with_globs():
    things: Registry[object] = Registry("thing")
    for name in ("grad_a", "grad_b", "perturb_a", "other"):
        things.register(name)(type(name, (), {}))
    assert things.list() == ["grad_a", "grad_b", "other", "perturb_a"]
    assert things.list("grad_*") == ["grad_a", "grad_b"]
    assert things.list("*_a, other") == ["grad_a", "other", "perturb_a"]
    assert things.list("nothing*") == []
    assert [name for name, _ in things.items()] == things.list()


def test_modules_are_imported_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "xaibench_late_entries.py").write_text(
        "from tests.test_registry import LATE\n"
        "@LATE.register('late', kind='filled lazily')\n"
        "class Late:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "xaibench_late_entries" not in sys.modules
    assert LATE.list() == ["late"]
    assert LATE.get("late").kind == "filled lazily"
