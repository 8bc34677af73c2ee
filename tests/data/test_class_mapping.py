"""Class folders and string labels are matched by name to the model's classes (``prepare``): labels are
always the model's class indices, and a name the model does not know is refused, naming it and where the
model's class names came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.core.errors import InputError
from xaibench.data.prepare import Selection, prepare
from xaibench.models import LoadedModel, ModelMeta

DIGITS = tuple(str(d) for d in range(10))


def _model(outputs: int = 10, class_names: tuple[str, ...] | None = None) -> LoadedModel:
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, outputs)).eval()
    return LoadedModel(module, ModelMeta(class_names=class_names), "checkpoint", "toy.pt", "0" * 64)


def _folder(root: Path, files: list[str], classes_txt: str | None = None) -> str:
    """An image folder of 4x4 greyscale PNGs at the relative paths ``files``."""
    for number, name in enumerate(files):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), number, dtype=np.uint8)).save(root / name)
    if classes_txt is not None:
        (root / "classes.txt").write_text(classes_txt)
    return str(root)


def _refused(model: LoadedModel, selection: Selection) -> str:
    with pytest.raises(InputError) as info:
        prepare(model, selection)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_subset_of_class_folders_gets_the_models_class_indices(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["7/a.png", "3/b.png", "7/c.png"])
    prepared = prepare(_model(class_names=DIGITS), Selection(data=spec, target="label"))
    assert prepared.data.y.tolist() == [3, 7, 7]  # files sorted: 3/b, 7/a, 7/c
    assert prepared.targets.tolist() == [3, 7, 7]
    assert prepared.meta.class_names == DIGITS and prepared.data.class_names == DIGITS


def test_names_from_classes_flag_and_from_classes_txt(tmp_path: Path) -> None:
    names = ("cat", "dog", "eel")
    spec = _folder(tmp_path / "flag", ["eel/a.png", "cat/b.png"])
    prepared = prepare(_model(3), Selection(data=spec, classes=names))
    assert prepared.data.y.tolist() == [0, 2]
    spec = _folder(tmp_path / "txt", ["eel/a.png", "dog/b.png"], classes_txt="cat\ndog\n\neel\n")
    prepared = prepare(_model(3), Selection(data=spec))
    assert prepared.data.y.tolist() == [1, 2] and prepared.meta.class_names == names


def test_the_classes_flag_wins_over_metadata(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["b/a.png"])
    prepared = prepare(_model(2, class_names=("x", "y")), Selection(data=spec, classes=("a", "b")))
    assert prepared.data.y.tolist() == [1]


def test_every_class_as_a_folder_names_the_classes_when_nothing_else_does(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["dog/a.png", "cat/b.png"])
    prepared = prepare(_model(2), Selection(data=spec))
    assert prepared.meta.class_names == ("cat", "dog") and prepared.data.y.tolist() == [0, 1]  # cat/b, dog/a


def test_an_unknown_class_folder_is_named(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["3/a.png", "cat/b.png", "dog/c.png"])
    message = _refused(_model(class_names=DIGITS), Selection(data=spec))
    assert message == (f"{spec}: class folders 'cat', 'dog' name no class of the model; its 10 classes "
                       "(from the model's metadata) are 0, 1, 2, 3, 4, 5, 6, 7 and 2 more")


def test_unknown_folder_against_the_classes_flag_says_so(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["a/x.png"])
    message = _refused(_model(2), Selection(data=spec, classes=("b", "c")))
    assert message == f"{spec}: class folder 'a' names no class of the model; its 2 classes (from --classes) are b, c"


def test_a_subset_without_class_names_says_what_was_inferred(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["3/a.png", "7/b.png"])
    message = _refused(_model(), Selection(data=spec))
    assert message == (
        f"{spec} has 2 class folders (3, 7) but the model has 10 outputs and no class names to match them "
        f"to (none in its metadata, no --classes, no {spec}/classes.txt); pass --classes with 10 names in "
        f"output order or write them to {spec}/classes.txt, one per line"
    )
    assert "class names were given" not in message


def test_a_wrong_number_of_class_names_names_its_source(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["3/a.png"], classes_txt="3\n7\n")
    assert _refused(_model(), Selection(data=spec)) == (
        f"the model has 10 outputs but 2 class names were given by {spec}/classes.txt")
    assert _refused(_model(), Selection(data=spec, classes=("a", "b", "c"))) == (
        "the model has 10 outputs but 3 class names were given by --classes")


def test_classes_txt_that_contradicts_the_metadata_is_refused(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["3/a.png"], classes_txt="\n".join(reversed(DIGITS)))
    message = _refused(_model(class_names=DIGITS), Selection(data=spec))
    assert message.startswith(f"{spec}/classes.txt lists the classes 9, 8, 7, 6, 5, 4, 3, 2 and 2 more but "
                              "the model's metadata names them 0, 1, 2, 3, 4, 5, 6, 7 and 2 more")


def test_a_label_matching_two_classes_is_refused(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["a/x.png"])
    assert _refused(_model(2), Selection(data=spec, classes=("a", "a"))) == (
        f"the class name 'a' of {spec} is given twice by --classes")


def test_bad_classes_txt(tmp_path: Path) -> None:
    spec = _folder(tmp_path, ["3/a.png"], classes_txt="3\n7\n3\n")
    message = _refused(_model(), Selection(data=spec))
    assert message == f"{spec}/classes.txt names the class '3' twice"


def test_string_labels_in_a_csv_are_matched_too(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b,label\n" + "".join(f"{i},0,{c}\n" for i, c in enumerate("yxy")))
    model = LoadedModel(torch.nn.Linear(2, 3).eval(), ModelMeta(class_names=("w", "x", "y")), "checkpoint",
                        "toy.pt", "0" * 64)
    prepared = prepare(model, Selection(data=str(tmp_path / "t.csv")))
    assert prepared.data.y.tolist() == [2, 1, 2]
    (tmp_path / "u.csv").write_text("a,b,label\n0,0,z\n")
    assert _refused(model, Selection(data=str(tmp_path / "u.csv"))).startswith(
        f"{tmp_path / 'u.csv'}: label 'z' names no class of the model")
