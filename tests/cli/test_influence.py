"""``xaibench influence fit | score | self`` end to end through the installed entry point."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.cli.conftest import SAMPLES, run_cli
from tests.influence.helpers import PickledMarker, snapshot
from xaibench.data.prepare import Selection, prepare
from xaibench.influence import ClassificationTask, Influence, ScoreConfig
from xaibench.influence.storage import load_factors
from xaibench.models import load_model

MLP = str(SAMPLES / "breast_cancer_mlp.pt")
CNN = str(SAMPLES / "digits_cnn.pt")


def test_fit_then_score_writes_what_the_library_computes(cli, tmp_path):
    fitted = cli("influence", "fit", MLP, "--train-n", "64", "--fisher", "empirical", "--factor-dtype", "float32",
                 "--out", "fac", "--json")
    assert fitted.code == 0, fitted.stderr
    summary = fitted.json()
    assert summary["samples"] == 64 and summary["strategy"] == "ekfac" and list(summary["modules"])
    assert summary["dtype"] == "float32"
    assert {t.dtype for t in load_file(str(tmp_path / "fac" / "factors.safetensors")).values()} == {torch.float32}
    factors, arguments = load_factors(tmp_path / "fac")
    assert arguments["train"]["samples"] == 64 and arguments["fisher"] == "empirical"
    assert not list(tmp_path.glob(".fac*"))  # no partial or staging folder left behind

    scored = cli("influence", "score", MLP, "--factors", "fac", "--train-n", "64", "-n", "3", "--top-k", "2",
                 "--damping", "1e-3", "--out", "run", "--json")
    assert scored.code == 0, scored.stderr
    result = scored.json()
    assert result["sign"].startswith("positive = the training example helps")
    tensors = load_file(str(tmp_path / "run" / "scores.safetensors"))
    assert tensors["scores"].shape == (3, 64)
    torch.testing.assert_close(sum(v for k, v in tensors.items() if k.startswith("modules/")), tensors["scores"])

    loaded = load_model(MLP)
    train = prepare(loaded, Selection(data="breast_cancer:train", n=64))
    queries = prepare(loaded, Selection(data="breast_cancer:test", n=3))
    expected = Influence(loaded.module, ClassificationTask(), factors, ScoreConfig(damping=1e-3)).pairwise(
        queries.inputs, queries.targets, train.inputs, train.data.y).sum(0)
    torch.testing.assert_close(tensors["scores"], expected)
    for q, record in enumerate(result["queries"]):
        best = expected[q].topk(2)
        assert [p["index"] for p in record["proponents"]] == best.indices.tolist()
        assert [p["score"] for p in record["proponents"]] == [float(v) for v in best.values]
        assert [o["index"] for o in record["opponents"]] == expected[q].topk(2, largest=False).indices.tolist()
    assert json.loads((tmp_path / "run" / "influence.json").read_text())["queries"] == result["queries"]
    assert result["montage"] is None  # tabular: no montage


def test_self_influence_on_images_ranks_and_draws_a_montage(cli, tmp_path):
    result = cli("influence", "self", CNN, "--train-n", "40", "--strategy", "kfac", "--top-k", "6",
                 "--out", "self", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    values = [e["self_influence"] for e in summary["ranking"]]
    assert len(values) == 6 and values == sorted(values, reverse=True) and summary["samples"] == 40
    all_values = load_file(str(tmp_path / "self" / "scores.safetensors"))["scores"]
    assert values[0] == float(all_values.max())
    assert (tmp_path / "self" / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    human = cli("influence", "self", CNN, "--train-n", "40", "--top-k", "3", "--out", "self2")
    assert human.code == 0 and "highest first" in human.stdout and "montage" in human.stdout


def test_score_montage_for_an_image_model(cli, tmp_path):
    assert cli("influence", "fit", CNN, "--train-n", "48", "--out", "fac").code == 0
    result = cli("influence", "score", CNN, "--factors", "fac", "--train-n", "48", "-n", "2", "--top-k", "3",
                 "--out", "run")
    assert result.code == 0, result.stderr
    assert "proponents" in result.stdout and "opponents" in result.stdout and "positive =" in result.stdout
    assert (tmp_path / "run" / "montage.png").stat().st_size > 10_000


def test_bad_input_is_one_line_and_exit_2(cli_in_process, tmp_path):
    assert cli_in_process("influence", "fit", MLP, "--train-n", "16", "--out", "fac").code == 0
    cases = [
        (("influence", "fit", MLP, "--train-n", "16", "--out", "fac"), "exists"),
        (("influence", "fit", MLP, "--strategy", "lissa", "--out", "x"), "unknown strategy"),
        (("influence", "fit", MLP, "--factor-dtype", "float16", "--out", "x"), "--factor-dtype takes"),
        (("influence", "score", CNN, "--factors", "fac", "--out", "y"), "another model"),
        (("influence", "score", MLP, "--factors", "fac", "--damping", "lots", "--out", "y"), "--damping"),
        (("influence", "score", MLP, "--factors", "fac", "--damping", "nan", "--out", "y"), "--damping"),
    ]
    for args, message in cases:
        result = cli_in_process(*args)
        assert result.code == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.fixture(scope="module")
def diagonal(tmp_path_factory) -> Path:
    """Diagonal factors of the MLP on 16 examples, fitted once for the tests below."""
    folder = tmp_path_factory.mktemp("diagonal") / "fac"
    fitted = run_cli("influence", "fit", MLP, "--train-n", "16", "--strategy", "diagonal", "--fisher",
                     "empirical", "--out", str(folder))
    assert fitted.code == 0, fitted.stderr
    return folder


def strict_json(text: str) -> object:
    """JSON as the standard defines it: NaN and Infinity are not JSON."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in JSON output")
    return json.loads(text, parse_constant=refuse)


def test_undefined_scores_are_null_in_json(cli, tmp_path, diagonal):
    # Diagonal factors without damping: a hidden unit that no example activates has zero curvature and
    # a zero gradient, 0 / 0 = NaN, so every score is undefined.
    args = ("influence", "score", MLP, "--factors", str(diagonal), "--train-n", "16", "-n", "2",
            "--top-k", "2", "--damping", "0")
    result = cli(*args, "--out", "run", "--json")
    assert result.code == 0, result.stderr
    assert torch.isnan(load_file(str(tmp_path / "run" / "scores.safetensors"))["scores"]).all()
    for document in (strict_json(result.stdout), strict_json((tmp_path / "run" / "influence.json").read_text())):
        scores = [e["score"] for q in document["queries"] for kind in ("proponents", "opponents") for e in q[kind]]
        assert scores == [None] * 8
    human = cli(*args, "--out", "run2")
    assert human.code == 0 and "(benign) NaN" in human.stdout, human.stdout + human.stderr


def test_tampered_factors_are_refused_before_any_work(cli_in_process, tmp_path, diagonal):
    marker = tmp_path / "pwned"

    def tamper(name: str, change) -> str:
        folder = tmp_path / name
        shutil.copytree(diagonal, folder)
        change(folder)
        return name

    def edit(folder: Path, key: str, value) -> None:
        info = json.loads((folder / "factors.json").read_text())
        info[key] = value(info[key]) if callable(value) else value
        (folder / "factors.json").write_text(json.dumps(info))

    def reshape(folder: Path) -> None:
        tensors = load_file(str(folder / "factors.safetensors"))
        tensors["fc3/lambda"] = tensors["fc3/lambda"][:, :-1].contiguous()
        save_file(tensors, str(folder / "factors.safetensors"))

    def cut(folder: Path) -> None:
        path = folder / "factors.safetensors"
        path.write_bytes(path.read_bytes()[:500])

    def pickled(folder: Path) -> None:
        (folder / "factors.safetensors").write_bytes(pickle.dumps(PickledMarker(str(marker))))

    traversal = {"fc1": "../x"}
    cases = [
        ("score", tamper("strategy", lambda f: edit(f, "strategy", "conv1")), "factors.json: unknown strategy"),
        ("score", tamper("names", lambda f: edit(f, "modules", lambda m: {traversal.get(k, k): v
                                                                           for k, v in m.items()})),
         "factors.json: module name '../x' is not a plain module name"),
        ("score", tamper("cut", cut), "factors.safetensors: not a safetensors file"),
        ("score", tamper("pickle", pickled), "factors.safetensors: not a safetensors file"),
        ("self", tamper("shape", reshape),
         "tensor 'fc3/lambda' has shape (2, 32) where diagonal factors need (2, 33)"),
    ]
    before = snapshot(tmp_path)
    for command, folder, message in cases:
        result = cli_in_process("influence", command, MLP, "--factors", folder, "--train-n", "16", "--out", "out")
        assert result.code == 2, (folder, result.stderr)
        assert result.stderr.startswith(f"error: {folder}/") and message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
    assert snapshot(tmp_path) == before  # no run, no partial folder, nothing changed
    assert not marker.exists()


def test_a_small_budget_scores_modules_in_groups_with_the_same_scores(cli_in_process, tmp_path):
    """Under --max-memory 2M the CNN's factors are held one group of modules at a time (fc's alone take
    1 MiB in float32, and converting them 6 MiB more: rows drop to one per pass, with a warning); the
    scores are those of one pass with every module (--batch-size), and run.json says which groups and
    bytes were held. (Scores with the same rows per pass are bit-identical grouped or not:
    tests/influence/test_streamed_factors.py.)"""
    assert cli_in_process("influence", "fit", CNN, "--train-n", "16", "--out", "fac").code == 0
    runs, warned = {}, {}
    for name, flags in (("small", ("--max-memory", "2M")), ("whole", ("--batch-size", "16"))):
        result = cli_in_process("influence", "self", CNN, "--factors", "fac", "--train-n", "16", *flags, "--out", name)
        assert result.code == 0, result.stderr
        runs[name] = json.loads((tmp_path / name / "run.json").read_text())["memory"]
        warned[name] = "more than the memory budget of 2.0 MiB" in result.stderr
    assert warned == {"small": True, "whole": False}
    assert runs["whole"]["factor_groups"] == [["conv1", "conv2", "conv3", "fc"]]
    assert runs["small"]["factor_groups"] == [["conv1", "conv2", "conv3"], ["fc"]]
    (scoring,) = [p for p in runs["small"]["passes"] if "held_bytes" in p]
    assert scoring["held_bytes"] > 2 << 20 and scoring["rows_per_pass"] == 1
    small, whole = (load_file(str(tmp_path / name / "scores.safetensors")) for name in ("small", "whole"))
    torch.testing.assert_close(small, whole, rtol=1e-4, atol=1e-6)  # float32 sums over other batch sizes


def test_self_without_factors_resumes_with_the_factors_it_fitted(cli_in_process, tmp_path, monkeypatch):
    """The factors that influence self fits are written into the partial folder and read from there; a
    run killed while scoring reuses them instead of fitting again, and gives the uninterrupted scores."""
    from xaibench.influence import scores as scores_module
    from xaibench.jobs import influence as jobs_module

    args = ("influence", "self", MLP, "--train-n", "16", "--fisher", "empirical")
    assert cli_in_process(*args, "--out", "whole").code == 0
    real = scores_module.Influence.self_influence

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scores_module.Influence, "self_influence", killed)
    assert cli_in_process(*args, "--out", "resumed").code == 130  # interrupted
    assert (tmp_path / ".resumed.partial" / "fitted-factors" / "factors.json").is_file()
    monkeypatch.setattr(scores_module.Influence, "self_influence", real)
    monkeypatch.setattr(jobs_module, "fit_factors", killed)  # a second fit would fail the run
    assert cli_in_process(*args, "--out", "resumed").code == 0
    assert not (tmp_path / ".resumed.partial").exists()
    whole, resumed = (load_file(str(tmp_path / name / "scores.safetensors")) for name in ("whole", "resumed"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
