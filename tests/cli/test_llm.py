"""``xaibench llm-explain`` and ``explain --method llm`` through the installed entry point, against a
scripted chat-completions server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import SAMPLES
from tests.llm.server import Answer, serving
from tests.llm.truth import LOGREG as TRUTH
from tests.llm.truth import logreg_order
from xaibench.llm.parse import letters

LOGREG = str(SAMPLES / "breast_cancer_logreg.pt")
KEY = "sk-cli-test-key-0b7e55"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XAIBENCH_CACHE_DIR": str(tmp_path / "cache"), "SCRIPTED_KEY": KEY}


@pytest.fixture(scope="module")
def top5() -> list[str]:
    """The logistic regression's true top five, as names and as prompt labels."""
    names = TRUTH.load().meta.feature_names
    order = logreg_order()[:5]
    return [names[j] for j in order], [letters(30)[j] for j in order]


def test_llm_explain_shows_the_reply_the_ranking_the_ground_truth_and_the_cost(cli, env, top5) -> None:
    names, labels = top5
    with serving(lambda body: Answer(text="Comparing the samples...\nAnswer: " + ", ".join(labels))) as server:
        args = ("llm-explain", LOGREG, "--base-url", server.url, "--llm", "scripted", "--api-key-env",
                "SCRIPTED_KEY", "-p", "prompt_price=2.5", "-p", "completion_price=10")
        first = cli(*args, "--out", "run", "--json", env=env)
        assert first.code == 0, first.stderr
        human = cli(*args, "--out", "again", env=env)
        assert len(server.requests) == 1  # the second run came from the cache
    doc = first.json()
    sample = doc["samples"][0]
    assert sample["ranking"] == names and sample["ground_truth"] == names and sample["ok"]
    assert sample["feature_agreement"] == 1.0 and sample["rank_agreement"] == 1.0
    sent = server.requests[0]["messages"]
    assert sample["prompt_chars"] == sum(len(m["content"]) for m in sent) and sample["prompt_tokens"] == 100
    assert doc["account"]["sent"] == 1 and doc["account"]["cost_usd"] == pytest.approx((100 * 2.5 + 20 * 10) / 1e6)
    assert human.code == 0 and "Answer: " + ", ".join(labels) in human.stdout
    assert "0 sent, 1 cached" in human.stdout and "feature agreement 1.00 · rank agreement 1.00" in human.stdout
    assert names[0] in human.stdout and "(cached)" in human.stdout
    for text in (first.stdout, first.stderr, human.stdout, human.stderr,
                 *(p.read_text() for p in Path(doc["run_dir"]).rglob("*.json*"))):
        assert KEY not in text


def test_replay_reruns_a_recorded_run_without_a_server(cli, env, tmp_path) -> None:
    with serving(lambda body: Answer(text="Answer: A, B, C, D, E")) as server:
        recorded = cli("explain", LOGREG, "--method", "llm", "-n", "2", "-p", f"base_url={server.url}",
                       "-p", "llm_model=scripted", "--out", "recorded", "--json", env=env)
    assert recorded.code == 0, recorded.stderr
    replayed = cli("llm-explain", LOGREG, "-n", "2", "--backend", "replay", "--transcript",
                   str(tmp_path / "recorded"), "--out", "replayed", "--json", env=env)
    assert replayed.code == 0, replayed.stderr
    assert [s["ranking"] for s in replayed.json()["samples"]] == [["mean radius", "mean texture", "mean perimeter",
                                                                   "mean area", "mean smoothness"]] * 2
    assert replayed.json()["model"] == "scripted"


def test_bad_input_is_one_line_and_exit_2(cli, env) -> None:
    for args, message in [
        (("--strategy", "q-icl", "--llm", "x"), "unknown LLM prompting strategy 'q-icl'"),
        (("--backend", "openai"), "name the LLM"),
        (("--backend", "replay", "--transcript", "missing.jsonl"), "cannot read transcript"),
        (("--llm", "x", "-p", "names=roman"), "names must be letters or real"),
    ]:
        result = cli("llm-explain", LOGREG, *args, env=env)
        assert result.code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
            (args, result.stderr)
    image = cli("llm-explain", str(SAMPLES / "shapes_cnn.pt"), "--llm", "x", env=env)
    assert image.code == 2 and "does not apply to image" in image.stderr


def test_a_failing_server_is_exit_1_with_one_line(cli, env, tmp_path) -> None:
    with serving(lambda body: Answer(status=503, headers={"retry-after-ms": "10"})) as server:
        result = cli("llm-explain", LOGREG, "--base-url", server.url, "--llm", "x", "-p", "retries=1",
                     "--out", "failed", env=env)
    assert result.code == 1 and "answered HTTP 503 (2 attempts)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "failed").exists()
