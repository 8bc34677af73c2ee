"""A factors directory read from disk is validated before use: every defect is one InputError naming the
file, nothing is executed, nothing is written. Fuzzed with truncations, byte flips and type swaps."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

from tests.influence.helpers import PickledMarker, snapshot, tiny_mlp
from xaibench.core.errors import InputError
from xaibench.influence import STRATEGIES, ClassificationTask, FitConfig, fit_factors
from xaibench.influence.storage import load_factors, save_factors

SHA = "ab" * 32


def write(folder: Path, strategy: str = "ekfac", model: nn.Module | None = None) -> Path:
    """Factors of ``model`` (tiny_mlp: modules "0" (5, 7) and "2" (3, 6)) saved into ``folder``."""
    model = model or tiny_mlp()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (8,), generator=gen)
    factors = fit_factors(model, ClassificationTask(), x, y, FitConfig(strategy=strategy, fisher="empirical"))
    folder.mkdir(exist_ok=True)
    save_factors(folder, factors, {"model_sha256": SHA, "seed": 0})
    return folder


def edit_json(folder: Path, change) -> None:
    path = folder / "factors.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


def edit_tensors(folder: Path, change) -> None:
    path = folder / "factors.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def refused(folder: Path, *pieces: str, model: nn.Module | None = None, sha256: str | None = None) -> None:
    """Reading ``folder`` is one InputError, one line holding every piece (the file, the problem), and
    writes nothing."""
    before = snapshot(folder.parent)
    with pytest.raises(InputError) as caught:
        load_factors(folder, model, sha256)
    message = str(caught.value)
    assert "\n" not in message, message
    for piece in pieces:
        assert piece in message, message
    assert snapshot(folder.parent) == before


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_valid_factors_load_against_their_model(tmp_path, strategy):
    model = tiny_mlp()
    folder = write(tmp_path / "fac", strategy, model)
    factors, arguments = load_factors(folder, model, SHA)
    assert factors.strategy == strategy and factors.shapes == {"0": (5, 7), "2": (3, 6)}
    assert arguments == {"model_sha256": SHA, "seed": 0}
    expected = {"identity": 0, "diagonal": 2, "kfac": 8, "ekfac": 10, "exact": 1}[strategy]
    assert len(factors.tensors) == expected


JSON_DEFECTS = [
    (lambda i: i.pop("modules"), "'modules' is missing"),
    (lambda i: i.pop("arguments"), "'arguments' is missing"),
    (lambda i: i.pop("strategy"), "'strategy' is missing"),
    (lambda i: i.update(strategy="conv1"), "unknown strategy 'conv1'"),
    (lambda i: i.update(strategy=["ekfac"]), "unknown strategy ['ekfac']"),
    (lambda i: i.update(modules=[["0", [5, 7]]]), "'modules' must be an object"),
    (lambda i: i.update(arguments=[1]), "'arguments' must be an object"),
    (lambda i: i["modules"].update({"0": [5]}), "module '0' must have a shape [out, in]"),
    (lambda i: i["modules"].update({"0": ["5", 7]}), "module '0' must have a shape [out, in]"),
    (lambda i: i["modules"].update({"0": [True, 7]}), "module '0' must have a shape [out, in]"),
    (lambda i: i["modules"].update({"0": [0, 7]}), "module '0' must have a shape [out, in]"),
    (lambda i: i["modules"].update({"0": 5}), "module '0' must have a shape [out, in]"),
    (lambda i: i.update(modules={}), "names no module"),
    (lambda i: i.update(format="pickle"), "format 'pickle'"),
]


@pytest.mark.parametrize("change,problem", JSON_DEFECTS)
def test_a_tampered_factors_json_is_refused(tmp_path, change, problem):
    folder = write(tmp_path / "fac")
    edit_json(folder, change)
    refused(folder, str(folder / "factors.json"), problem)


@pytest.mark.parametrize("text,problem", [
    ("{not json", "not JSON"), ("[1, 2]", "not a JSON object"), ("", "not JSON"),
    ('{"format": NaN}', "not JSON"), ("[" * 100_000, "not JSON"),
])
def test_a_factors_json_that_is_not_a_json_object_is_refused(tmp_path, text, problem):
    folder = write(tmp_path / "fac")
    (folder / "factors.json").write_text(text)
    refused(folder, str(folder / "factors.json"), problem)


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", "a..b", "a\\b", "*", "fc[0]", "a\nb", ".x"])
def test_module_names_that_are_not_plain_names_are_refused(tmp_path, name):
    folder = write(tmp_path / "fac", "diagonal")
    edit_json(folder, lambda i: i["modules"].update({name: i["modules"].pop("0")}))
    edit_tensors(folder, lambda t: t.update({f"{name}/lambda": t.pop("0/lambda")}))
    refused(folder, str(folder / "factors.json"), f"module name {name!r} is not a plain module name")


def test_dotted_names_and_the_root_module_are_plain(tmp_path):
    model = nn.Sequential()
    model.add_module("block", nn.Sequential(nn.Linear(6, 3).double()))
    factors, _ = load_factors(write(tmp_path / "fac", "diagonal", model), model)
    assert list(factors.shapes) == ["block.0"]
    bare = nn.Linear(6, 3).double()  # torch names a model's root module ""
    factors, _ = load_factors(write(tmp_path / "bare", "kfac", bare), bare)
    assert factors.shapes == {"": (3, 7)} and len(factors.tensors) == 4


TENSOR_DEFECTS = [
    ("ekfac", lambda t: t.pop("2/lambda"), "misses tensor '2/lambda'"),
    ("ekfac", lambda t: t.update({"2/extra": torch.zeros(2, dtype=torch.float64)}),
     "holds unexpected tensor '2/extra'"),
    ("ekfac", lambda t: t.update({"2/lambda": torch.zeros(3, 5, dtype=torch.float64)}),
     "tensor '2/lambda' has shape (3, 5) where ekfac factors need (3, 6)"),
    ("kfac", lambda t: t.update({"0/A_vectors": torch.zeros(7, dtype=torch.float64)}),
     "tensor '0/A_vectors' has shape (7,) where kfac factors need (7, 7)"),
    ("exact", lambda t: t.update({"exact/fisher": torch.zeros(52, 52, dtype=torch.float64)}),
     "tensor 'exact/fisher' has shape (52, 52) where exact factors need (53, 53)"),
    ("diagonal", lambda t: t.update({"0/lambda": t["0/lambda"].float()}), "tensor '0/lambda' is float32"),
    ("diagonal", lambda t: t.update({"0/lambda": t["0/lambda"].long()}), "tensor '0/lambda' is int64"),
    ("diagonal", lambda t: t["0/lambda"].__setitem__((0, 0), float("nan")), "'0/lambda' holds NaN or infinite"),
    ("diagonal", lambda t: t["0/lambda"].__setitem__((0, 0), float("inf")), "'0/lambda' holds NaN or infinite"),
    ("exact", lambda t: t["exact/fisher"].__setitem__((0, 1), 7.0), "'exact/fisher' is not symmetric"),
]


@pytest.mark.parametrize("strategy,change,problem", TENSOR_DEFECTS)
def test_tampered_factor_tensors_are_refused(tmp_path, strategy, change, problem):
    folder = write(tmp_path / "fac", strategy)
    edit_tensors(folder, change)
    refused(folder, str(folder / "factors.safetensors"), problem)


def test_an_unreadable_tensors_file_is_refused(tmp_path):
    folder = write(tmp_path / "fac")
    path = folder / "factors.safetensors"
    whole = path.read_bytes()
    for cut in (0, 7, 8, 100, len(whole) - 1):
        path.write_bytes(whole[:cut])
        refused(folder, str(path), "not a safetensors file")
    path.unlink()
    refused(folder, str(path), "is missing")
    path.mkdir()
    refused(folder, str(path), "is missing")


def test_factor_files_that_are_links_out_of_the_folder_are_refused(tmp_path):
    folder, other = write(tmp_path / "fac"), write(tmp_path / "other")
    (folder / "factors.safetensors").unlink()
    (folder / "factors.safetensors").symlink_to(other / "factors.safetensors")
    refused(folder, str(folder / "factors.safetensors"), "a link out of")
    (folder / "factors.safetensors").unlink()
    (folder / "factors.safetensors").symlink_to("factors.safetensors")
    refused(folder, str(folder / "factors.safetensors"), "into a loop")
    (folder / "factors.json").unlink()
    (folder / "factors.json").symlink_to("/dev/zero")  # never read: it would never end
    refused(folder, str(folder / "factors.json"), "a link out of")


def test_a_pickle_in_place_of_safetensors_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(PickledMarker(str(marker)))
    pickle.loads(payload)  # the payload works: unpickling it creates the marker
    assert marker.exists()
    marker.unlink()
    folder = write(tmp_path / "fac")
    for path in (folder / "factors.safetensors", folder / "factors.json"):
        saved = path.read_bytes()
        path.write_bytes(payload)
        refused(folder, str(path))
        torch.save({"weights": PickledMarker(str(marker))}, path)  # a torch.save zip around the pickle
        refused(folder, str(path))
        path.write_bytes(saved)
    assert not marker.exists()


def test_factors_that_do_not_fit_the_model_are_refused(tmp_path):
    folder = write(tmp_path / "fac", "kfac")
    wider = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    refused(folder, "factors.json", "module '0' has shape (5, 7) in the factors but (4, 7) in the model",
            model=wider)
    other = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Identity(), nn.Linear(5, 3))
    refused(folder, "factors.json", "module '2' is not a Linear or Conv2d of the model", model=other)
    renamed = nn.Sequential()
    renamed.add_module("0", nn.Linear(6, 5))
    renamed.add_module("1", nn.Linear(5, 3))
    refused(folder, "factors.json", "module '2' is not a Linear or Conv2d of the model", model=renamed)
    swapped = write(tmp_path / "swapped", "diagonal")
    edit_json(swapped, lambda i: i.update(modules={"2": i["modules"]["2"], "0": i["modules"]["0"]}))
    refused(swapped, "factors.json", "modules ['2', '0'] are not in the model's order ['0', '2']",
            model=tiny_mlp())


def test_the_model_file_hash_must_match(tmp_path):
    folder = write(tmp_path / "fac")
    refused(folder, "fitted on another model file (sha256 abababababab..., this model cdcdcdcdcdcd...)",
            model=tiny_mlp(), sha256="cd" * 32)
    edit_json(folder, lambda i: i["arguments"].update(model_sha256="\x1b[31m" + "a" * 60))
    refused(folder, "factors.json", "'model_sha256' is not a sha256", model=tiny_mlp(), sha256="cd" * 32)


# -- fuzzing: any corruption is either a valid file or one InputError; nothing else escapes -------------


def _load_or_refuse(folder: Path, model: nn.Module) -> None:
    try:
        load_factors(folder, model, SHA)
    except InputError as err:
        assert "\n" not in str(err) and str(folder) in str(err), str(err)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, bytes]:
    folder = write(tmp_path_factory.mktemp("pristine") / "fac", "ekfac")
    return {name: (folder / name).read_bytes() for name in ("factors.json", "factors.safetensors")}


def _fuzz_folder(tmp_path: Path, pristine: dict[str, bytes], name: str, data: bytes) -> Path:
    folder = tmp_path / "fac"
    folder.mkdir(exist_ok=True)
    for file, content in pristine.items():
        (folder / file).write_bytes(data if file == name else content)
    return folder


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.sampled_from(["factors.json", "factors.safetensors"]), st.floats(0, 1),
       st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3))
def test_fuzzed_bytes_are_a_valid_file_or_one_input_error(tmp_path, pristine, name, keep, flips):
    data = bytearray(pristine[name][:int(len(pristine[name]) * keep)])
    for where, value in flips:
        if data:
            data[min(int(where * len(data)), len(data) - 1)] = value
    folder = _fuzz_folder(tmp_path, pristine, name, bytes(data))
    before = snapshot(tmp_path)
    _load_or_refuse(folder, tiny_mlp())
    assert snapshot(tmp_path) == before


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 60) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["ekfac", "exact", "../x", "/abs", "a/b", "0", "2"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every position inside a JSON value, as a tuple of keys and indices."""
    inner = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    return [prefix] + [p for key, item in inner for p in _paths(item, (*prefix, key))]


@FUZZ
@given(st.data(), JSON_VALUES)
def test_fuzzed_json_types_are_a_valid_file_or_one_input_error(tmp_path, pristine, data, replacement):
    info = json.loads(pristine["factors.json"])
    where = data.draw(st.sampled_from(_paths(info)))
    if where:
        parent = info
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = replacement
    else:
        info = replacement
    folder = _fuzz_folder(tmp_path, pristine, "factors.json", json.dumps(info).encode())
    before = snapshot(tmp_path)
    _load_or_refuse(folder, tiny_mlp())
    assert snapshot(tmp_path) == before
