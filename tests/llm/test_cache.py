"""The response cache answers a request only when backend, model, prompt and sampling all match: any
difference is a fresh request to the server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.llm.server import Answer, serving
from xaibench.llm.backends import BACKENDS, Request, Settings
from xaibench.llm.cache import ResponseCache
from xaibench.llm.client import Client

ASKED = Request("model-a", (("system", "be brief"), ("user", "Which features matter?")), temperature=0.0,
                max_tokens=64, seed=0)
DIFFERENT = {
    "model": replace(ASKED, model="model-b"),
    "temperature": replace(ASKED, temperature=0.7),
    "max_tokens": replace(ASKED, max_tokens=65),
    "seed": replace(ASKED, seed=1),
    "prompt": replace(ASKED, messages=(("system", "be brief"), ("user", "Which features matter most?"))),
    "role": replace(ASKED, messages=(("user", "be brief"), ("user", "Which features matter?"))),
}


def openai(url: str):
    return BACKENDS.get("openai")(Settings(base_url=url, retries=0))


def test_a_hit_needs_the_same_backend_model_prompt_and_sampling(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "llm.sqlite")
    with serving(lambda body: Answer(text=f"Answer for {body['model']}")) as one, \
            serving(lambda body: Answer(text="Answer from the other server")) as two:
        client = Client(openai(one.url), cache=cache)
        assert [e.cached for e in client.ask([ASKED]) + client.ask([ASKED])] == [False, True]
        for what, request in DIFFERENT.items():
            exchange, = client.ask([request])
            assert not exchange.cached, what
        assert len(one.requests) == 1 + len(DIFFERENT)
        assert one.requests[1]["model"] == "model-b" and one.requests[2]["temperature"] == 0.7
        exchange, = Client(openai(two.url), cache=cache).ask([ASKED])  # the same request, another server
    cache.close()
    assert (exchange.cached, exchange.reply.text, len(two.requests)) == (False, "Answer from the other server", 1)
