"""Influence holds only what a pass needs: stored factors are read when used (rows at a time), and
scoring holds the converted factors of one group of modules at a time, within ``factor_memory``."""

from __future__ import annotations

import json
import re
import struct
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.influence.helpers import padded_cnn
from xaibench.core.errors import InputError
from xaibench.core.memory import Budget, RowPlan
from xaibench.influence import (
    ClassificationTask,
    Factors,
    FitConfig,
    Influence,
    ScoreConfig,
    fit_factors,
    stored_tensors,
)
from xaibench.influence import scores as scores_module
from xaibench.influence.plan import score_plan
from xaibench.influence.storage import PartialWork, load_factors, save_factors

TASK = ClassificationTask()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """padded_cnn's EK-FAC factors on (2, 3, 3) inputs, in memory and saved, and the data."""
    model = padded_cnn()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 2, 3, 3, generator=gen, dtype=torch.float64), torch.randint(0, 3, (24,), generator=gen)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="ekfac", batch_size=8))
    folder = tmp_path_factory.mktemp("factors")
    save_factors(folder, factors, {})
    return model, factors, folder, x, y


def test_stored_factors_read_the_same_tensors_and_rows_a_chunk_at_a_time(fitted, monkeypatch):
    model, factors, folder, _, _ = fitted
    monkeypatch.setattr(stored_tensors, "CHUNK_BYTES", 40)  # a few rows per read
    loaded, _ = load_factors(folder, model)
    assert isinstance(loaded.tensors, stored_tensors.StoredTensors)
    assert loaded.tensors.keys() == factors.tensors.keys()
    for key, value in factors.tensors.items():
        assert torch.equal(loaded.tensors[key], value), key
    for name in factors.shapes:
        vectors = factors.module(name, "A_vectors")
        for rows in (torch.tensor([0]), torch.tensor([1, 4, 5, len(vectors) - 1]), torch.arange(len(vectors))):
            blocks = list(loaded.module_rows(name, "A_vectors", rows))
            assert torch.equal(torch.cat(blocks), vectors[rows]), (name, rows)
            assert len(blocks) == len(torch.unique(rows // max(1, 40 // (8 * vectors.shape[1]))))


def test_a_factors_file_changed_after_loading_is_refused_when_read(fitted, tmp_path, monkeypatch):
    model, _, folder, _, _ = fitted
    monkeypatch.setattr(stored_tensors, "CHUNK_BYTES", 40)
    for name in ("factors.json", "factors.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    loaded, _ = load_factors(tmp_path, model)
    tensors = load_file(str(tmp_path / "factors.safetensors"))
    tensors["4/A_vectors"][-1, -1] = float("nan")  # in the last chunk
    save_file(tensors, str(tmp_path / "factors.safetensors"))  # a new file of the same layout
    with pytest.raises(InputError, match="changed since it was loaded"):
        loaded.tensors["4/A_vectors"]
    with pytest.raises(InputError, match="changed since it was loaded"):
        next(loaded.module_rows("4", "A_vectors", torch.tensor([0])))
    with pytest.raises(InputError, match="'4/A_vectors' holds NaN"):  # a new load checks every chunk
        load_factors(tmp_path, model)


def raw_file(path, header: object, data: bytes = b"", length: int | None = None) -> None:
    """A safetensors file written by hand: 8-byte length, the JSON header, the data."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)


@pytest.mark.parametrize("entry,length,problem", [
    ({"dtype": "F64", "shape": [2], "data_offsets": [0, 17]}, None, "lies outside the file"),
    ({"dtype": "F64", "shape": [2], "data_offsets": [-8, 8]}, None, "lies outside the file"),
    ({"dtype": "F64", "shape": [2], "data_offsets": [8, 24]}, None, "lies outside the file"),
    ({"dtype": "F64", "shape": [2], "data_offsets": [0, 8]}, None, "lies outside the file"),
    ({"dtype": "F64", "shape": [True, 2], "data_offsets": [0, 16]}, None, "has no valid shape"),
    ({"dtype": "F64", "shape": [3], "data_offsets": [0, 24]}, None, "has shape (3,) where"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, None, "is float32, not float64"),
    ("not an object", None, "entry 'v' is not an object"),
    ({"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}, 10**6, "no header"),
    ({"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}, 1, "no header"),
])
def test_hand_written_headers_are_checked_before_any_data_is_read(tmp_path, entry, length, problem):
    raw_file(tmp_path / "t.safetensors", {"v": entry}, struct.pack("<2d", 1.0, 2.0), length)
    with pytest.raises(InputError, match=re.escape(problem)):
        stored_tensors.StoredTensors(tmp_path / "t.safetensors", {"v": (2,)}, "test factors").verify()
    raw_file(tmp_path / "big.safetensors", {"v": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
                                            "pad": "x" * (80 << 10)}, struct.pack("<2d", 1.0, 2.0))
    with pytest.raises(InputError, match="no header"):  # refused unparsed: a header of 80 KiB
        stored_tensors.StoredTensors(tmp_path / "big.safetensors", {"v": (2,)}, "test factors")
    raw_file(tmp_path / "ok.safetensors", {"v": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}},
             struct.pack("<2d", 1.0, 2.0))
    ok = stored_tensors.StoredTensors(tmp_path / "ok.safetensors", {"v": (2,)}, "test factors")
    assert ok["v"].tolist() == [1.0, 2.0] and "v" in ok and "w" not in ok


def test_reads_never_take_more_than_a_chunk(fitted, monkeypatch):
    model, factors, folder, x, y = fitted
    monkeypatch.setattr(stored_tensors, "CHUNK_BYTES", 1000)  # 3 rows of 37 float64
    real, largest = stored_tensors.StoredTensors._read_rows, [0]

    def read(self, key, start, stop):
        largest[0] = max(largest[0], (stop - start) * self._width(key) * 8)
        return real(self, key, start, stop)

    monkeypatch.setattr(stored_tensors.StoredTensors, "_read_rows", read)
    loaded, _ = load_factors(folder, model)
    vectors = loaded.tensors["4/A_vectors"]
    assert torch.equal(vectors, factors.tensors["4/A_vectors"]) and vectors.numel() * 8 > 1000
    list(loaded.module_rows("4", "A_vectors", torch.arange(len(vectors))))
    list(loaded.module_rows("4", "A_vectors"))
    influence = Influence(model, TASK, loaded, ScoreConfig(damping=None))  # the bases and weights too
    influence.self_influence(x, y)
    assert 0 < largest[0] <= 1000


def singles(factors) -> ScoreConfig:
    """A factor memory of 1 byte: every module is a group of its own."""
    return ScoreConfig(damping=1e-3, batch_size=5, chunk_size=10, factor_memory=1)


def test_grouped_passes_give_the_scores_of_one_pass(fitted):
    model, factors, _, x, y = fitted
    whole = Influence(model, TASK, factors, ScoreConfig(damping=1e-3, batch_size=5, chunk_size=10))
    grouped = Influence(model, TASK, factors, singles(factors))
    assert whole.module_groups(x[:1]) == [list(factors.shapes)]
    assert grouped.module_groups(x[:1]) == [[name] for name in factors.shapes]
    assert torch.equal(grouped.self_influence(x, y), whole.self_influence(x, y))
    assert torch.equal(grouped.pairwise(x[:4], y[:4], x, y), whole.pairwise(x[:4], y[:4], x, y))


def test_converted_factors_held_at_once_stay_within_the_factor_memory(fitted, monkeypatch):
    model, _factors, folder, x, y = fitted
    loaded, _ = load_factors(folder, model)
    probe = Influence(model, TASK, loaded, ScoreConfig(damping=1e-3))
    held = probe._held(x[:1])[0]
    limit = max(held.values()) + min(held.values())  # groups of one or two modules
    influence = Influence(model, TASK, loaded, ScoreConfig(damping=1e-3, batch_size=5, factor_memory=limit))
    assert 1 < len(influence.module_groups(x[:1])) < len(held)
    peak = [0]
    real_basis, real_weights = scores_module.Preconditioner.basis, scores_module.Preconditioner.weights

    def measured(conditioner) -> None:
        bases = sum(b.held_bytes() for b in conditioner._bases.values())
        weights = sum(w.numel() * w.element_size() for w in conditioner._weights.values() if w is not None)
        peak[0] = max(peak[0], bases + weights)

    def basis(self, *args):
        out = real_basis(self, *args)
        measured(self)
        return out

    def weights(self, *args):
        out = real_weights(self, *args)
        measured(self)
        return out

    monkeypatch.setattr(scores_module.Preconditioner, "basis", basis)
    monkeypatch.setattr(scores_module.Preconditioner, "weights", weights)
    influence.self_influence(x, y)
    assert 0 < peak[0] <= limit
    peak[0] = 0
    influence.pairwise(x[:3], y[:3], x, y)
    assert 0 < peak[0] <= limit


def test_a_killed_grouped_self_influence_resumes_to_the_same_scores(fitted, tmp_path, monkeypatch):
    model, factors, _, x, y = fitted
    influence = Influence(model, TASK, factors, singles(factors))
    expected = influence.self_influence(x, y)
    partial = PartialWork.beside(tmp_path / "self", {"self": 1})
    real, calls = scores_module.capture, [0]

    def capture(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5 + 3:  # 5 batches per group: into the second group's second chunk
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(scores_module, "capture", capture)
    with pytest.raises(KeyboardInterrupt):
        influence.self_influence(x, y, partial)
    calls[0] = -100
    assert torch.equal(influence.self_influence(x, y, partial), expected)
    assert calls[0] == -100 + 5 * len(factors.shapes) - 5 - 2  # the first group and one chunk not redone


def test_the_plan_keeps_held_factors_and_rows_within_the_budget(fitted):
    model, factors, _, x, _y = fitted
    influence = Influence(model, TASK, factors, ScoreConfig(damping=1e-3))
    held, converting = influence._held(x[:1])
    for budget, groups in ((1 << 20, 1), (2 * (sum(held.values()) - 1), 2)):
        memory = RowPlan(None, Budget(budget, "test"))
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            config = score_plan(memory, influence, x[:1])
        planned = Influence(model, TASK, factors, config)
        assert config.factor_memory == budget // 2 and len(planned.module_groups(x[:1])) == groups
        assert planned.held_bytes(x[:1]) <= budget // 2 + max(converting.values())
        (record,) = memory.record()["passes"]
        assert record["held_bytes"] == planned.held_bytes(x[:1])
        fits = record["rows_per_pass"] * record["row_bytes"] + record["held_bytes"] <= budget
        assert fits or (record["rows_per_pass"] == 1 and "more than the memory budget" in str(warned[-1].message))
    scoring = score_plan(RowPlan.of(None, "1M"), influence, x[:1], x[:7])
    assert scoring.factor_memory == (1 << 20) // 4 and 1 <= scoring.query_block <= 7
    fixed = score_plan(RowPlan.of(3, None), influence, x[:1], x[:7])
    assert (fixed.batch_size, fixed.query_batch_size, fixed.query_block, fixed.factor_memory) == (3, 3, None, None)


@pytest.mark.parametrize("dtype,tolerance", [("float64", 0.0), ("float32", 1e-5), ("bfloat16", 0.05)])
def test_factors_stored_in_a_narrower_dtype_score_within_its_rounding(fitted, tmp_path, dtype, tolerance):
    model, factors, _, x, y = fitted
    save_factors(tmp_path, factors, {}, dtype)
    stored = load_file(str(tmp_path / "factors.safetensors"))
    assert {t.dtype for t in stored.values()} == {getattr(torch, dtype)}
    loaded, _ = load_factors(tmp_path, model)
    for key, value in factors.tensors.items():  # read back as float64, rounded once
        assert torch.equal(loaded.tensors[key], value.to(getattr(torch, dtype)).double()), key
    config = ScoreConfig(damping=1e-2, batch_size=8)
    exact = Influence(model, TASK, factors, config).pairwise(x[:4], y[:4], x, y).sum(0)
    rounded = Influence(model, TASK, loaded, config).pairwise(x[:4], y[:4], x, y).sum(0)
    error = float((rounded - exact).norm() / exact.norm())
    assert error <= tolerance, error
    if dtype == "bfloat16":
        assert error > 1e-4  # the rounding is real: the bound above is not vacuous
    declared = json.loads((tmp_path / "factors.json").read_text())
    declared["dtype"] = "float64" if dtype != "float64" else "float32"
    (tmp_path / "factors.json").write_text(json.dumps(declared))
    with pytest.raises(InputError, match=f"is {dtype}, not {declared['dtype']}"):
        load_factors(tmp_path, model)
    declared["dtype"] = "int8"
    (tmp_path / "factors.json").write_text(json.dumps(declared))
    with pytest.raises(InputError, match="unknown dtype 'int8'"):
        load_factors(tmp_path, model)
    if dtype != "float64":
        huge = Factors(factors.strategy, factors.shapes, {**factors.tensors, "0/lambda": factors.tensors["0/lambda"] * 1e300})
        with pytest.raises(InputError, match=f"the factors overflow {dtype}"):
            save_factors(tmp_path / "huge", huge, {}, dtype)
