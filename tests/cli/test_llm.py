"""``xaibench llm-explain`` and ``explain --method llm`` against a scripted chat-completions server on
127.0.0.1. The first run of test_llm_explain_shows_the_reply_the_ranking_the_ground_truth_and_the_cost and
test_keys_and_url_credentials_never_reach_the_output_or_the_run (which checks the argv a run records) go
through the installed entry point; the others run the same ``main`` in this process (``cli_in_process``)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from xaibench.cli.llm import print_summary

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


def test_llm_explain_shows_the_reply_the_ranking_the_ground_truth_and_the_cost(cli, cli_in_process, env,
                                                                              top5) -> None:
    names, labels = top5
    with serving(lambda body: Answer(text="Comparing the samples...\nAnswer: " + ", ".join(labels))) as server:
        args = ("llm-explain", LOGREG, "--base-url", server.url, "--llm", "scripted", "--api-key-env",
                "SCRIPTED_KEY", "-p", "prompt_price=2.5", "-p", "completion_price=10")
        first = cli(*args, "--out", "run", "--json", env=env)
        assert first.code == 0, first.stderr
        human = cli_in_process(*args, "--out", "again", env=env)
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


def test_replay_reruns_a_recorded_run_without_a_server(cli_in_process, env, tmp_path) -> None:
    with serving(lambda body: Answer(text="Answer: A, B, C, D, E")) as server:
        recorded = cli_in_process("explain", LOGREG, "--method", "llm", "-n", "2", "-p", f"base_url={server.url}",
                                  "-p", "llm_model=scripted", "--out", "recorded", "--json", env=env)
    assert recorded.code == 0, recorded.stderr
    replayed = cli_in_process("llm-explain", LOGREG, "-n", "2", "--backend", "replay", "--transcript",
                              str(tmp_path / "recorded"), "--out", "replayed", "--json", env=env)
    assert replayed.code == 0, replayed.stderr
    assert [s["ranking"] for s in replayed.json()["samples"]] == [["mean radius", "mean texture", "mean perimeter",
                                                                   "mean area", "mean smoothness"]] * 2
    assert replayed.json()["model"] == "scripted"


def test_bad_input_is_one_line_and_exit_2(cli_in_process, env) -> None:
    for args, message in [
        (("--strategy", "q-icl", "--llm", "x"), "unknown LLM prompting strategy 'q-icl'"),
        (("--backend", "openai"), "name the LLM"),
        (("--backend", "replay", "--transcript", "missing.jsonl"), "cannot read transcript"),
        (("--llm", "x", "-p", "names=roman"), "names must be letters or real"),
        (("--llm", "x", "--base-url", "notaurl"), "base_url must be an http or https URL with a host"),
    ]:
        result = cli_in_process("llm-explain", LOGREG, *args, env=env)
        assert result.code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
            (args, result.stderr)
    image = cli_in_process("llm-explain", str(SAMPLES / "shapes_cnn.pt"), "--llm", "x", env=env)
    assert image.code == 2 and "does not apply to image" in image.stderr


def test_a_failing_server_is_exit_1_with_one_line(cli_in_process, env, tmp_path) -> None:
    with serving(lambda body: Answer(status=503, headers={"retry-after-ms": "10"})) as server:
        result = cli_in_process("llm-explain", LOGREG, "--base-url", server.url, "--llm", "x", "-p", "retries=1",
                                "--out", "failed", env=env)
    assert result.code == 1 and "answered HTTP 503 (2 attempts)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "failed").exists()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The transcript of a one-sample run, recorded in this process from the scripted server."""
    from xaibench.data.prepare import Selection
    from xaibench.jobs.explain import ExplainConfig, explain

    out = tmp_path_factory.mktemp("recorded") / "run"
    with serving(lambda body: Answer(text="Answer: A, B, C, D, E")) as server:
        explain(ExplainConfig(TRUTH, "llm", Selection(n=1), out=str(out), params={
            "base_url": server.url, "llm_model": "scripted", "cache": "false"}), ["test"])
    return out / "transcript.jsonl"


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda recorded: json.dumps({**json.loads(recorded), "reply": None}).encode() + b"\n",
     "transcript.jsonl:1 is not a transcript record: 'reply' must be a string, not null"),
    (lambda recorded: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", "transcript.jsonl:1 is not a transcript record: "
     "not UTF-8 text"),
], ids=["null-reply", "binary-file"])
def test_a_tampered_transcript_is_exit_2_and_leaves_no_run(cli_in_process, env, tmp_path, recorded, tamper,
                                                           message) -> None:
    """Before the check, a null reply crashed the printer (exit 1) after the run was written."""
    (tmp_path / "transcript.jsonl").write_bytes(tamper(recorded.read_bytes()))
    result = cli_in_process("llm-explain", LOGREG, "--backend", "replay", "--transcript", "transcript.jsonl",
                            "--out", "replayed", env=env)
    assert result.code == 2 and result.stderr.strip() == f"error: {message}", result.stderr
    assert not (tmp_path / "replayed").exists()


def test_keys_and_url_credentials_never_reach_the_output_or_the_run(cli, env, tmp_path, top5) -> None:
    """The server echoes the key in its reply; the base URL carries user:password. The reply is masked
    before it is cached, stored or printed; the URL is shown and recorded without its credentials."""
    password = "pw-0f3c9e1d77aa"
    with serving(lambda body: Answer(text=f"Auth was Bearer {KEY}.\nAnswer: " + ", ".join(top5[1]))) as server:
        url = server.url.replace("http://", f"http://analyst:{password}@")
        result = cli("llm-explain", LOGREG, "--base-url", url, "--llm", "scripted", "--api-key-env",
                     "SCRIPTED_KEY", "--out", "run", "--json", env=env)
    assert result.code == 0, result.stderr
    sample = result.json()["samples"][0]
    assert sample["reply"] == "Auth was Bearer ***.\nAnswer: " + ", ".join(top5[1]) and sample["ok"]
    assert result.json()["account"]["backend"] == f"openai {server.url}"
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["argv"][3:5] == ["--base-url", server.url]
    shown = [result.stdout, result.stderr, (tmp_path / "run" / "transcript.jsonl").read_text(),
             (tmp_path / "run" / "run.json").read_text()]
    assert not any(password in text or "analyst" in text for text in shown)
    stored = [*shown, *(p.read_bytes().decode("latin-1") for p in (tmp_path / "run").rglob("*") if p.is_file()),
              (tmp_path / "cache" / "llm.sqlite").read_bytes().decode("latin-1")]
    assert not any(KEY[i:i + 8] in text for text in stored for i in range(len(KEY) - 7))


def test_the_printer_shows_any_sample_the_run_recorded() -> None:
    """Nothing printed after the run is written may fail: a reply or reason of the wrong type, a missing
    ranking, no ground truth, no token count, a run directory that reads as rich markup (--out 'runs/[/]x')."""
    summary = {"run_dir": "runs/[/]x", "strategy": "p-icl", "account": {
        "sent": 1, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0},
        "samples": [{"index": 3, "prompt_chars": 120, "prompt_tokens": None, "cached": False, "reply": None,
                     "ok": False, "reason": None, "ranking": None, "ground_truth": None,
                     "feature_agreement": None, "rank_agreement": None},
                    {"index": 4, "prompt_chars": 99, "prompt_tokens": 7, "cached": True, "reply": 42,
                     "ok": True, "reason": None, "ranking": ["A"], "ground_truth": None,
                     "feature_agreement": None, "rank_agreement": None}]}
    console = Console(file=StringIO(), width=200, highlight=False, markup=False)  # as cli.output.Output
    print_summary(console, summary)
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]
    assert lines == ["sample #3 · p-icl · prompt 120 characters", "  reply:", "  not parsed:",
                     "  rank    LLM    ground truth",
                     "sample #4 · p-icl · prompt 99 characters, 7 tokens (cached)", "  reply:", "    42",
                     "  rank    LLM    ground truth", "  1       A      n/a (not a linear model)",
                     "requests: 1 sent, 0 cached · tokens: 0 prompt + 0 completion · cost: $0.0000",
                     "run directory: runs/[/]x  (transcript.jsonl replays it)"]
