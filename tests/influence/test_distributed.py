"""influence fit / score / self across processes: the same factors and scores as one process.

In process, each rank's share is checked against one process by pretending to be rank r of 2 (the
collectives replaced by recorders); end to end, ``torchrun --nproc-per-node 2`` (gloo on CPU) is compared
with a plain run of the same command. Eigenvectors are compared as the matrices they decompose: with
(nearly) repeated eigenvalues, summing in another order legitimately turns them within their eigenspace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.conftest import SAMPLES, Result, run_cli
from tests.influence.helpers import tiny_mlp
from xaibench.core import distributed
from xaibench.influence import (
    ClassificationTask,
    FitConfig,
    Influence,
    ScoreConfig,
    fit_factors,
)
from xaibench.influence.storage import PartialWork

TORCHRUN = Path(sys.executable).with_name("torchrun")
MLP = str(SAMPLES / "breast_cancer_mlp.pt")
# 121 rows: blocks of 60 and 61, whose chunks and batches do not line up with one process's; enough rows
# for the true Fisher to sample labels other than the data's (so the draws' indexing matters)
DATA = ("--train-n", "121", "--chunk-size", "16", "--batch-size", "7")
TASK = ClassificationTask()


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal within 1e-5 relative to the tensor's largest magnitude."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")


# --- in process: each rank's share, collectives replaced by recorders --------------------------------


def data(n: int = 13) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def as_rank(monkeypatch, rank: int, size: int = 2) -> list[dict[str, torch.Tensor] | torch.Tensor]:
    """Be ``rank`` of ``size``: what this rank hands to all_sum / gather_rows is recorded and kept local."""
    seen: list = []
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(rank, size))
    monkeypatch.setattr(distributed, "all_sum", lambda sums: seen.append(dict(sums)) or sums)
    monkeypatch.setattr(distributed, "gather_rows", lambda local, n: seen.append(local) or local)
    return seen


def test_each_rank_sums_its_block_with_the_global_draws(monkeypatch):
    model, (x, y) = tiny_mlp(), data()
    config = FitConfig(strategy="kfac", batch_size=3, chunk_size=4)  # true Fisher: sampled labels
    with monkeypatch.context() as patch:
        whole = as_rank(patch, 0, 1)
        fit_factors(model, TASK, x, y, config)
    shares = []
    for rank in range(2):
        with monkeypatch.context() as patch:
            seen = as_rank(patch, rank)
            fit_factors(model, TASK, x, y, config)
            shares.append(seen[0])
    for key, value in whole[0].items():
        torch.testing.assert_close(shares[0][key] + shares[1][key], value, rtol=1e-12, atol=1e-12, msg=key)
    assert float(shares[0]["0/A_count"]) == 6 and float(shares[1]["0/A_count"]) == 7


def test_each_rank_scores_its_block_of_training_examples(monkeypatch):
    model, (x, y) = tiny_mlp(), data()
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="ekfac", fisher="empirical"))
    influence = Influence(model, TASK, factors, ScoreConfig(batch_size=3, chunk_size=4))
    pairwise, self_scores = influence.pairwise(x[:4], y[:4], x, y), influence.self_influence(x, y)
    blocks = []
    for rank in range(2):
        with monkeypatch.context() as patch:
            seen = as_rank(patch, rank)
            influence.pairwise(x[:4], y[:4], x, y)
            influence.self_influence(x, y)
            blocks.append([part.movedim(0, -1) for part in seen])  # handed over with the train axis first
    torch.testing.assert_close(torch.cat([blocks[0][0], blocks[1][0]], dim=-1), pairwise)
    torch.testing.assert_close(torch.cat([blocks[0][1], blocks[1][1]], dim=-1), self_scores)
    assert blocks[0][0].shape == (len(factors.shapes), 4, 6) and blocks[1][1].shape == (len(factors.shapes), 7)


def test_checkpoints_belong_to_a_rank_and_a_world_size(monkeypatch, tmp_path):
    model, (x, y) = tiny_mlp(), data()
    partial = PartialWork.beside(tmp_path / "factors", {"fit": 1})
    with monkeypatch.context() as patch:
        as_rank(patch, 1)
        fit_factors(model, TASK, x, y, FitConfig(strategy="ekfac", chunk_size=4), partial)
    assert sorted(p.name for p in partial.folder.glob("*.safetensors")) == [
        "covariance@rank1of2.safetensors", "lambda@rank1of2.safetensors"]
    assert partial.load("lambda@rank1of2")[1] == 7  # rank 1's rows 6-12 done
    assert partial.load("lambda") is None  # one process does not resume it


# --- end to end: torchrun with 2 processes against one process ---------------------------------------


def torchrun(*args: str, cwd: Path) -> Result:
    env = {**os.environ, "XAIBENCH_DEBUG": "", "OMP_NUM_THREADS": "1", "XAIBENCH_DIST_TIMEOUT": "120"}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "xaibench", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """fit, score and self, each by one process (<command>1) and by two (<command>2), in one folder."""
    where = tmp_path_factory.mktemp("distributed")
    for name, extra in [("fit", ()), ("score", ("--factors", "fit1", "-n", "3", "--top-k", "3")),
                        ("self", ("--factors", "fit1", "--top-k", "5"))]:
        args = ("influence", name, MLP, *extra, *DATA, "--json")
        one = run_cli(*args, "-o", f"{name}1", cwd=where, env={"OMP_NUM_THREADS": "1"})
        assert one.code == 0, one.stderr
        two = torchrun(*args, *(() if name == "self" else ("-o", f"{name}2")), cwd=where)  # self: runs/...
        assert two.code == 0, two.stderr
        (where / f"{name}2.stdout").write_text(two.stdout)
    return where


def world_size(run: Path) -> int:
    return json.loads((run / "run.json").read_text())["world_size"]


def test_two_processes_fit_the_same_factors(runs):
    one, two = load_file(str(runs / "fit1" / "factors.safetensors")), load_file(str(runs / "fit2" / "factors.safetensors"))
    assert one.keys() == two.keys() and any(k.endswith("/lambda") for k in one)
    for key, value in one.items():
        if key.endswith("_vectors"):  # the matrix the eigenpairs decompose
            values = key.replace("_vectors", "_values")
            close(two[key] @ two[values].diag() @ two[key].T, value @ one[values].diag() @ value.T, key)
        else:
            close(two[key], value, key)
    arguments = [json.loads((runs / f / "factors.json").read_text()) for f in ("fit1", "fit2")]
    assert arguments[0] == arguments[1]
    assert (world_size(runs / "fit1"), world_size(runs / "fit2")) == (1, 2)
    assert json.loads((runs / "fit2.stdout").read_text())["samples"] == 121  # rank 0's summary alone


def test_two_processes_score_the_same(runs):
    one, two = load_file(str(runs / "score1" / "scores.safetensors")), load_file(str(runs / "score2" / "scores.safetensors"))
    assert one.keys() == two.keys() and one["scores"].shape == (3, 121)
    for key, value in one.items():
        close(two[key], value, key)
    rankings = [json.loads((runs / r / "influence.json").read_text())["queries"] for r in ("score1", "score2")]
    assert [[p["index"] for p in q["proponents"]] for q in rankings[1]] == \
        [[p["index"] for p in q["proponents"]] for q in rankings[0]]
    assert (world_size(runs / "score1"), world_size(runs / "score2")) == (1, 2)


def test_two_processes_give_the_same_self_influence_and_write_once(runs):
    written = list((runs / "runs").iterdir())  # rank 0's default run directory, shared with rank 1
    assert len(written) == 1 and written[0].name.startswith("influence-self-"), written
    assert json.loads((runs / "self2.stdout").read_text())["run_dir"] == str(Path("runs") / written[0].name)
    one, two = load_file(str(runs / "self1" / "scores.safetensors")), load_file(str(written[0] / "scores.safetensors"))
    assert one.keys() == two.keys() and one["scores"].shape == (121,)
    for key, value in one.items():
        close(two[key], value, key)
    assert (world_size(runs / "self1"), world_size(written[0])) == (1, 2)
    leftovers = [p.name for p in [*runs.iterdir(), *(runs / "runs").iterdir()] if p.name.startswith(".")]
    assert not leftovers  # no partial folder of either rank, no staging folder
