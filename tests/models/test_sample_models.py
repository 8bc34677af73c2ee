"""The bundled sample models: the files match sample_models/README.md, and training reproduces it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from xaibench.data import load_data
from xaibench.data.prepare import Selection, prepare
from xaibench.models import load_model

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


def _train_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sample_models_train", SAMPLES / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _table() -> dict[str, dict[str, str]]:
    """The README's table as {model name: {column: cell}}."""
    lines = (SAMPLES / "README.md").read_text().splitlines()
    rows = [line.strip().strip("|").split("|") for line in lines
            if line.startswith("|") and not line.startswith("|--")]
    header = [cell.strip() for cell in rows[0]]
    table = [dict(zip(header, (cell.strip() for cell in row))) for row in rows[1:]]
    return {row["file"].strip("`").removesuffix(".pt"): row for row in table}


TRAIN = _train_script()
TABLE = _table()


def test_table_matches_the_recipes():
    shipped = {name: recipe for name, recipe in TRAIN.RECIPES.items() if recipe.shipped}
    assert sorted(TABLE) == sorted(shipped)
    for name, recipe in shipped.items():
        assert (TABLE[name]["dataset"], TABLE[name]["epochs"]) == (recipe.dataset, str(recipe.epochs))
        assert TABLE[name]["architecture"].startswith(f"`{recipe.arch}`")


@pytest.mark.parametrize("name", sorted(TABLE))
def test_shipped_model_has_the_recorded_accuracy(name):
    loaded = load_model(SAMPLES / f"{name}.pt")
    test = load_data(f"{loaded.meta.dataset}:test")
    assert loaded.format == "checkpoint"
    assert (loaded.meta.dataset, loaded.meta.modality) == (TRAIN.RECIPES[name].dataset, test.modality)
    assert loaded.meta.class_names == test.class_names
    if test.modality == "text":  # the wrapped model reads embeddings of the tokens prepare makes
        prepared = prepare(loaded, Selection(data=f"{loaded.meta.dataset}:test"))
        accuracy = float((prepared.predictions.cpu() == prepared.data.y).double().mean())
    else:
        assert loaded.meta.input_shape == tuple(test.x.shape[1:])
        accuracy = TRAIN.accuracy_of(loaded.module, test)
    assert f"{accuracy:.4f}" == TABLE[name]["test accuracy"]


def test_retraining_reproduces_the_recorded_accuracy(tmp_path):
    accuracy = TRAIN.train("breast_cancer_logreg", tmp_path)
    assert f"{accuracy:.4f}" == TABLE["breast_cancer_logreg"]["test accuracy"]
    loaded = load_model(tmp_path / "breast_cancer_logreg.pt")
    test = load_data("breast_cancer:test")
    assert TRAIN.accuracy_of(loaded.module, test) == accuracy
    meta = loaded.meta
    assert (meta.modality, meta.input_shape, meta.dataset) == ("tabular", (30,), "breast_cancer")
    assert meta.class_names == ("malignant", "benign") and meta.feature_names == test.feature_names
    assert (meta.mean, meta.std) == (None, None)
