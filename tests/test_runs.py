"""Run directories appear whole or not at all, and --overwrite only ever replaces xaibench's own output."""

from __future__ import annotations

import pytest

from xaibench import runs
from xaibench.errors import InputError, RunExistsError


def _fill(staging, text="new"):
    (staging / runs.RUN_FILE).write_text("{}")
    (staging / "data.txt").write_text(text)


def test_staged_dir_appears_only_when_complete(tmp_path):
    out = tmp_path / "run"
    with runs.staged_dir(out, overwrite=False) as staging:
        _fill(staging)
        assert not out.exists()
    assert (out / "data.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), runs.staged_dir(tmp_path / "run", overwrite=False) as staging:
        _fill(staging)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_run_needs_overwrite_and_survives_a_failure(tmp_path):
    out = tmp_path / "run"
    with runs.staged_dir(out, overwrite=False) as staging:
        _fill(staging, "old")
    with pytest.raises(RunExistsError, match="--overwrite"):
        runs.staged_dir(out, overwrite=False).__enter__()
    with pytest.raises(RuntimeError), runs.staged_dir(out, overwrite=True) as staging:
        _fill(staging)
        raise RuntimeError("boom")
    assert (out / "data.txt").read_text() == "old"
    with runs.staged_dir(out, overwrite=True) as staging:
        _fill(staging)
    assert (out / "data.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_never_replaces_a_foreign_directory(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(RunExistsError, match="not written by xaibench"):
        runs.check_destination(out, overwrite=True)
    assert (out / "thesis.tex").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    runs.check_destination(empty, overwrite=True)  # an empty folder may be used


def test_a_file_in_the_way_is_an_input_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        runs.check_destination(tmp_path / "file", overwrite=True)


def test_write_json_is_atomic_and_readable(tmp_path):
    runs.write_json(tmp_path / runs.RUN_FILE, {"command": "explain", "n": 3})
    assert runs.read_run(tmp_path) == {"command": "explain", "n": 3}
    assert [p.name for p in tmp_path.iterdir()] == [runs.RUN_FILE]
    with pytest.raises(InputError, match="not an xaibench run directory"):
        runs.read_run(tmp_path / "nothing")
