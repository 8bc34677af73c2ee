"""The openai backend end to end against a scripted chat-completions server on 127.0.0.1; replay."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time

import pytest

from tests.llm.server import Answer, serving
from xaibench.core.errors import InputError
from xaibench.llm.backends import BACKENDS, LLMError, Request, Settings
from xaibench.llm.client import Client, Prices

KEY = "sk-test-do-not-leak-4f9a"
REQUEST = Request("scripted", (("system", "be brief"), ("user", "Which features matter?")))


def backend(url: str, **settings: object):
    return BACKENDS.get("openai")(Settings(base_url=url, api_key_env="XAIBENCH_TEST_KEY", **settings))


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAIBENCH_TEST_KEY", KEY)


def test_speaks_the_wire_format_and_sends_the_key_in_the_header_only() -> None:
    with serving(lambda body: Answer(text="Answer: A, B")) as server:
        reply = backend(server.url).complete(REQUEST)
    assert reply.text == "Answer: A, B" and (reply.prompt_tokens, reply.completion_tokens) == (100, 20)
    body = server.requests[0]
    assert body["model"] == "scripted" and body["temperature"] == 0 and body["max_tokens"] == 1024
    assert body["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "Which features matter?"}]
    assert server.auth == [f"Bearer {KEY}"] and KEY not in json.dumps(body)


def test_a_slow_server_times_out_with_a_clear_error() -> None:
    with serving(lambda body: Answer(text="late", delay=2.0)) as server, \
            pytest.raises(LLMError, match=r"no reply within 0.3 s \(1 attempt\)"):
        backend(server.url, timeout=0.3, retries=0).complete(REQUEST)  # without the timeout: "late"


def test_429_is_retried_with_backoff_then_succeeds() -> None:
    count = itertools.count()

    def answer(body: dict) -> Answer:
        if next(count) < 2:  # two rate limits, then an answer; the server asks for 50 ms
            return Answer(status=429, headers={"retry-after-ms": "50"})
        return Answer(text="Answer: B")

    with serving(answer) as server:
        reply = backend(server.url, retries=2).complete(REQUEST)
    assert reply.text == "Answer: B" and len(server.requests) == 3


def test_500s_give_up_after_the_retries_with_the_status() -> None:
    with serving(lambda body: Answer(status=500, headers={"retry-after-ms": "10"})) as server, \
            pytest.raises(LLMError, match=r"answered HTTP 500 \(3 attempts\)"):
        backend(server.url, retries=2).complete(REQUEST)
    assert len(server.requests) == 3


def test_no_retry_on_a_client_error() -> None:
    with serving(lambda body: Answer(status=400)) as server, pytest.raises(LLMError, match="HTTP 400"):
        backend(server.url, retries=3).complete(REQUEST)
    assert len(server.requests) == 1


@pytest.mark.parametrize("raw", [b"{not json", b'{"id": "x", "choices": []}', b"[1, 2]",
                                 b'{"choices": [{"message": {"role": "assistant"}}]}'])
def test_a_malformed_reply_is_a_clear_error(raw: bytes) -> None:
    with serving(lambda body: Answer(raw=raw)) as server, pytest.raises(LLMError, match="malformed reply"):
        backend(server.url).complete(REQUEST)


def test_a_refused_key_names_the_variable_not_the_key(caplog: pytest.LogCaptureFixture) -> None:
    def answer(body: dict) -> Answer:  # servers echo (part of) the key back
        return Answer(status=401, raw=json.dumps({"error": {"message": f"Incorrect API key {KEY}"}}).encode())

    caplog.set_level(logging.DEBUG)
    with serving(answer) as server, pytest.raises(LLMError) as caught:
        backend(server.url).complete(REQUEST)
    assert "XAIBENCH_TEST_KEY" in str(caught.value) and KEY not in str(caught.value)
    assert KEY not in caplog.text


def test_no_server_is_a_clear_error() -> None:
    with serving(lambda body: Answer()) as server:
        url = server.url
    with pytest.raises(LLMError, match="cannot connect"):
        backend(url, retries=0).complete(REQUEST)


def test_the_client_bounds_concurrency_and_keeps_the_account() -> None:
    active, most, lock = [0], [0], threading.Lock()

    def answer(body: dict) -> Answer:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return Answer(text=body["messages"][-1]["content"].upper())

    requests = [Request("scripted", (("user", f"question {i}"),)) for i in range(8)]
    with serving(answer) as server:
        client = Client(backend(server.url), cache=None, concurrency=3, prices=Prices(2.5, 10.0))
        exchanges = client.ask(requests)
    assert [e.reply.text for e in exchanges] == [f"QUESTION {i}" for i in range(8)]  # in request order
    assert 1 < most[0] <= 3
    summary = client.summary()
    assert (summary["sent"], summary["cached"], summary["prompt_tokens"], summary["completion_tokens"]) == \
        (8, 0, 800, 160)
    assert summary["cost_usd"] == pytest.approx((800 * 2.5 + 160 * 10.0) / 1e6)


def test_replay_answers_from_a_transcript_by_prompt(tmp_path) -> None:
    with serving(lambda body: Answer(text="Answer: " + body["messages"][-1]["content"][-1])) as server:
        client = Client(backend(server.url), cache=None)
        client.ask([Request("scripted", (("user", f"q{i}"),)) for i in range(3)])
    path = tmp_path / "transcript.jsonl"
    path.write_text(client.transcript())
    assert KEY not in path.read_text()
    replay = BACKENDS.get("replay")(Settings(transcript=str(tmp_path)))  # a run directory finds its file
    assert replay.default_model == "scripted"
    assert replay.complete(Request("other-name", (("user", "q1"),))).text == "Answer: 1"
    with pytest.raises(InputError, match="holds no reply"):
        replay.complete(Request("scripted", (("user", "q9"),)))
    with pytest.raises(InputError, match="needs a transcript"):
        BACKENDS.get("replay")(Settings())
    (tmp_path / "bad.jsonl").write_text('{"reply": "x"}\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        BACKENDS.get("replay")(Settings(transcript=str(tmp_path / "bad.jsonl")))


def test_the_openai_key_goes_to_openai_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with serving(lambda body: Answer(text="Answer: A")) as server:
        BACKENDS.get("openai")(Settings(base_url=server.url)).complete(REQUEST)  # a local server: no key
        BACKENDS.get("openai")(Settings(base_url=server.url, api_key_env="OPENAI_API_KEY")).complete(REQUEST)
    assert server.auth == ["Bearer unused", f"Bearer {KEY}"]  # unless the user names the variable


def test_a_key_given_as_the_variable_name_is_refused_without_echo() -> None:
    with pytest.raises(InputError) as caught:
        BACKENDS.get("openai")(Settings(base_url="http://127.0.0.1:9/v1", api_key_env=KEY))
    assert KEY not in str(caught.value) and "not the key" in str(caught.value)


def test_the_first_failure_stops_the_rest_at_once() -> None:
    """A 400 on the first request is raised while a slow request is still in flight, and no queued
    request is sent after it."""
    slow_answered = threading.Event()

    def answer(body: dict) -> Answer:
        content = body["messages"][-1]["content"]
        if content == "q0":
            return Answer(status=400)
        if content == "q1":
            time.sleep(1.0)
            slow_answered.set()
        return Answer(text="ok")

    with serving(answer) as server:
        client = Client(backend(server.url, retries=0), cache=None, concurrency=2)
        with pytest.raises(LLMError, match="HTTP 400"):
            client.ask([Request("scripted", (("user", f"q{i}"),)) for i in range(6)])
        assert not slow_answered.is_set()  # raised without waiting for the request in flight
        slow_answered.wait(3)  # the slow one finishes; no queued request is sent after the failure
    assert {body["messages"][-1]["content"] for body in server.requests} <= {"q0", "q1"}
