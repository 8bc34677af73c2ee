"""Secrets never leave the openai backend: a key echoed in an error or a reply (whole or any run of 8
characters of it) is masked, credentials in the base URL are used but never shown, and a base URL
that is not an http(s) URL with a host is refused."""

from __future__ import annotations

import base64
import json

import pytest

from tests.llm.server import Answer, serving
from xaibench.core.errors import InputError
from xaibench.llm.backends import BACKENDS, LLMError, Reply, Request, Settings
from xaibench.llm.cache import ResponseCache
from xaibench.llm.client import Client
from xaibench.llm.secrets import mask, without_credentials

KEY = "sk-proj-7Hq2mZx9Lw4Rt8Vb3Nc6Yd1Kf5Gj0Ps"
PASSWORD = "hunter2-correct-horse"
REQUEST = Request("scripted", (("user", "Which features matter?"),))


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAIBENCH_TEST_KEY", KEY)


def backend(url: str, **settings: object):
    return BACKENDS.get("openai")(Settings(base_url=url, api_key_env="XAIBENCH_TEST_KEY", retries=0, **settings))


def leaks(text: str, secret: str) -> bool:
    """Whether ``text`` shows any run of 8 characters of ``secret``."""
    return any(secret[i:i + 8] in text for i in range(len(secret) - 7))


def error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


def test_mask_hides_every_run_of_eight_characters_of_a_secret() -> None:
    assert mask(f"a {KEY} b", [KEY]) == "a *** b"
    assert mask(f"prefix {KEY[:20]}, middle {KEY[9:17]}, tail {KEY[-8:]}.", [KEY]) == \
        "prefix ***, middle ***, tail ***."
    assert mask(f"seven {KEY[:7]} stays", [KEY]) == f"seven {KEY[:7]} stays"  # 7 characters say nothing
    assert mask(f"{KEY[:10]}{KEY[20:30]}", [KEY]) == "***"  # two runs side by side: one mask
    assert mask("unused ollama words", ["unused", "ollama"]) == "unused ollama words"  # placeholders


def test_a_long_error_is_masked_before_it_is_cut() -> None:
    """The key straddles character 300 of the error: cutting first would show its first characters."""
    message = "x" * 247 + " Authorization: Bearer " + KEY + " was rejected"
    with serving(lambda body: Answer(status=400, raw=error_body(message))) as server, \
            pytest.raises(LLMError) as caught:
        backend(server.url).complete(REQUEST)
    shown = f"Error code: 400 - {'x' * 247} Authorization: Bearer *** was rejected"[:300]
    assert str(caught.value) == f"{server.url} answered HTTP 400 (1 attempt): {shown}"


def test_an_echoed_part_of_the_key_is_masked() -> None:
    message = f"key {KEY[:20]}... is not valid for project {KEY[12:24]}"
    with serving(lambda body: Answer(status=403, raw=error_body(message))) as server, \
            pytest.raises(LLMError) as caught:
        backend(server.url).complete(REQUEST)
    assert str(caught.value) == (f"{server.url} answered HTTP 403 (1 attempt): Error code: 403 - "
                                 "key ***... is not valid for project ***")


def test_a_reply_carrying_the_key_is_masked_before_it_is_cached_or_transcribed(tmp_path) -> None:
    text = f"Your key is {KEY} (or {KEY[3:15]} for short).\nAnswer: A, B"
    cache = ResponseCache(tmp_path / "llm.sqlite")
    with serving(lambda body: Answer(text=text)) as server:
        client = Client(backend(server.url), cache=cache)
        exchanges = client.ask([REQUEST])
        again = client.ask([REQUEST])  # from the cache
    cache.close()
    masked = "Your key is *** (or *** for short).\nAnswer: A, B"
    assert [e.reply.text for e in exchanges + again] == [masked, masked] and again[0].cached
    assert json.loads(client.transcript().splitlines()[0])["reply"] == masked
    assert not leaks((tmp_path / "llm.sqlite").read_bytes().decode("latin-1"), KEY)


def test_a_reply_cached_before_masking_is_masked_when_it_is_reused(tmp_path) -> None:
    with serving(lambda body: Answer(text="unused")) as server:
        openai = backend(server.url)
        cache = ResponseCache(tmp_path / "llm.sqlite")
        cache.put(REQUEST.cache_key(openai.identity), Reply(f"old reply with {KEY}", 10, 2))
        exchange, = Client(openai, cache=cache).ask([REQUEST])
    cache.close()
    assert (exchange.reply.text, exchange.cached, len(server.requests)) == ("old reply with ***", True, 0)


def test_credentials_in_the_base_url_are_sent_but_never_shown() -> None:
    def answer(body: dict) -> Answer:
        if body["messages"][-1]["content"] == "fail":  # a server echoing what it was sent
            return Answer(status=400, raw=error_body(f"bad login {PASSWORD} from {server.auth[-1]}"))
        return Answer(text=f"hello {PASSWORD}")

    with serving(answer) as server:
        url = server.url.replace("http://", f"http://analyst:{PASSWORD}@")
        openai = BACKENDS.get("openai")(Settings(base_url=url, retries=0))
        client = Client(openai, cache=None)
        client.ask([REQUEST])
        with pytest.raises(LLMError) as caught:
            openai.complete(Request("scripted", (("user", "fail"),)))
    token = base64.b64encode(f"analyst:{PASSWORD}".encode()).decode()
    assert server.auth[0] == f"Basic {token}"  # the server still gets them
    assert openai.identity == f"openai {server.url}"
    record = json.loads(client.transcript())
    assert (record["backend"], record["reply"]) == (f"openai {server.url}", "hello ***")
    assert str(caught.value) == \
        f"{server.url} answered HTTP 400 (1 attempt): Error code: 400 - bad login *** from Basic ***"


def test_credentials_are_not_shown_when_the_server_is_gone() -> None:
    with serving(lambda body: Answer()) as server:
        url = server.url
    with pytest.raises(LLMError) as caught:
        BACKENDS.get("openai")(Settings(base_url=url.replace("//", f"//analyst:{PASSWORD}@"), retries=0)) \
            .complete(REQUEST)
    assert str(caught.value).startswith(f"{url}: cannot connect (") and PASSWORD not in str(caught.value)
    assert "analyst" not in str(caught.value)


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:11434/v1", "ftp://example.com/v1", "http://",
                                 "http://host:port/v1", "file:///etc/passwd"])
def test_a_base_url_must_be_http_or_https_with_a_host(url: str) -> None:
    with pytest.raises(InputError) as caught:
        BACKENDS.get("openai")(Settings(base_url=url))
    assert str(caught.value) == "base_url must be an http or https URL with a host, e.g. http://127.0.0.1:11434/v1"


def test_without_credentials_keeps_scheme_host_port_path_and_query() -> None:
    assert without_credentials(f"http://analyst:{PASSWORD}@10.0.0.2:8000/v1?x=1") == "http://10.0.0.2:8000/v1?x=1"
    assert without_credentials(f"base_url=https://a%40b:{PASSWORD}@host/v1") == "base_url=https://host/v1"
    assert without_credentials("http://u:p@ss@host/v1") == "http://host/v1"  # the host follows the last @
    assert without_credentials("http://host/v1?to=a@b.org") == "http://host/v1?to=a@b.org"  # no userinfo
