"""Run directories appear whole or not at all, and --overwrite only ever replaces xaibench's own output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from xaibench.core import ownership, runs
from xaibench.core.errors import InputError, RunExistsError


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


# --- ownership: a manifest, not a marker name, proves what xaibench wrote ------------------------------------

def test_overwrite_needs_a_valid_manifest_listing_every_file(tmp_path):
    out = tmp_path / "run"
    with runs.staged_dir(out, overwrite=False) as staging:
        _fill(staging, "old")
    manifest = json.loads((out / ownership.MANIFEST_FILE).read_text())
    assert manifest["tool"] == "xaibench" and manifest["format"] == ownership.MANIFEST_FORMAT
    assert sorted(manifest["files"]) == ["data.txt", runs.RUN_FILE]
    runs.check_destination(out, overwrite=True)  # provably ours
    (out / "sub").mkdir()
    with pytest.raises(RunExistsError, match="sub/ was not written"):
        runs.check_destination(out, overwrite=True)
    (out / "sub").rmdir()
    (out / "data.txt").write_text("edited")
    with pytest.raises(RunExistsError, match="data.txt changed"):
        runs.check_destination(out, overwrite=True)
    (out / "data.txt").write_text("old")
    (out / ownership.MANIFEST_FILE).write_text('{"tool": "xaibench", "format": "other/1", "files": {}}')
    with pytest.raises(RunExistsError, match="no valid"):
        runs.check_destination(out, overwrite=True)


def test_a_symlink_inside_or_as_the_destination_is_never_followed(tmp_path):
    out = tmp_path / "run"
    with runs.staged_dir(out, overwrite=False) as staging:
        _fill(staging)
    victim = tmp_path / "victim"
    victim.mkdir()
    (out / "link").symlink_to(victim)
    with pytest.raises(RunExistsError, match="link is a link"):
        runs.check_destination(out, overwrite=True)
    (tmp_path / "alias").symlink_to(out)
    with pytest.raises(InputError, match="not a directory"):
        runs.check_destination(tmp_path / "alias", overwrite=True)


def test_update_manifest_keeps_rewritten_files_provable(tmp_path):
    out = tmp_path / "run"
    with runs.staged_dir(out, overwrite=False) as staging:
        _fill(staging)
        (staging / "heatmaps").mkdir()
        (staging / "heatmaps" / "a.png").write_text("a")
    (out / "heatmaps" / "a.png").unlink()
    (out / "heatmaps" / "b.png").write_text("b")
    (out / runs.RUN_FILE).write_text('{"style": 2}')
    ownership.update_manifest(out, [runs.RUN_FILE], replaced="heatmaps")
    runs.check_destination(out, overwrite=True)
    assert sorted(json.loads((out / ownership.MANIFEST_FILE).read_text())["files"]) == [
        "data.txt", "heatmaps/b.png", runs.RUN_FILE]


def test_a_failed_run_removes_the_parent_folders_it_created(tmp_path):
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "new" / "deeper" / "run"
    with pytest.raises(RuntimeError), runs.staged_dir(out, overwrite=False) as staging:
        _fill(staging)
        raise RuntimeError("boom")
    assert list((tmp_path / "kept").iterdir()) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_staging_of_a_dead_writer_is_removed_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    dead, alive = tmp_path / ".run.tmp-1-dead", tmp_path / ".run.tmp-2-alive"
    unowned, other = tmp_path / ".run.tmp-3-unowned", tmp_path / ".other.tmp-4-x"
    for folder, pid in ((dead, _dead_pid()), (alive, os.getpid()), (other, _dead_pid())):
        folder.mkdir()
        (folder / "half.safetensors").write_text("partial")
        (folder / ownership.OWNER_FILE).write_text(json.dumps(
            {"tool": "xaibench", "format": ownership.OWNER_FORMAT, "pid": pid, "host": socket.gethostname()}))
    unowned.mkdir()
    (unowned / "user.txt").write_text("mine")
    retired = tmp_path / f".run.old-{_dead_pid()}-1"  # a replaced run whose remover died
    with runs.staged_dir(retired, overwrite=False) as staging:
        _fill(staging)
    with runs.staged_dir(out, overwrite=False) as staging:
        _fill(staging)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".run.tmp-2-alive", ".run.tmp-3-unowned", ".other.tmp-4-x", "run"])
    assert not (out / ownership.OWNER_FILE).exists()
