"""Send many requests at once, through the cache, and keep the account and the transcript.

``concurrency`` requests run at a time on daemon worker threads (the backends block on the network).
The first request that fails for good is raised at once: no new request starts, and a request still in
flight is abandoned (daemon threads do not hold the process up for its timeout). Every reply that came
before stays in the cache, so a rerun resumes for free. Progress is reported from the calling thread,
one step per reply, since worker threads do not see the progress listener's context.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from xaibench.core.errors import InputError
from xaibench.core.progress import advance
from xaibench.llm.backends import Backend, Reply, Request
from xaibench.llm.cache import ResponseCache


@dataclass(frozen=True)
class Prices:
    """US dollars per million prompt and completion tokens (0 for a local server)."""

    prompt: float = 0.0
    completion: float = 0.0


@dataclass
class Account:
    """What a run asked and paid: ``sent`` requests reached the backend, ``cached`` came from the cache;
    tokens and cost count the sent ones only (a cached reply costs nothing this time)."""

    requests: int = 0
    sent: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, reply: Reply, cached: bool, prices: Prices) -> None:
        self.requests += 1
        if cached:
            self.cached += 1
            return
        self.sent += 1
        self.prompt_tokens += reply.prompt_tokens or 0
        self.completion_tokens += reply.completion_tokens or 0
        self.cost_usd += ((reply.prompt_tokens or 0) * prices.prompt
                          + (reply.completion_tokens or 0) * prices.completion) / 1e6


@dataclass(frozen=True)
class Exchange:
    """One request and its reply, as the transcript records it."""

    request: Request
    reply: Reply
    cached: bool
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    def record(self, backend: Backend) -> dict[str, Any]:
        """The transcript line: the request, the reply and what produced it; no key, no header."""
        return {"prompt_key": self.request.prompt_key(), "backend": backend.identity,
                "model": self.request.model, "messages": self.request.wire_messages(),
                "temperature": self.request.temperature, "max_tokens": self.request.max_tokens,
                "seed": self.request.seed, "reply": self.reply.text, "prompt_tokens": self.reply.prompt_tokens,
                "completion_tokens": self.reply.completion_tokens, "cached": self.cached,
                "seconds": round(self.seconds, 3), **self.meta}


class Client:
    """A backend behind the cache, with a bounded number of requests in flight."""

    def __init__(self, backend: Backend, *, cache: ResponseCache | None, concurrency: int = 4,
                 prices: Prices = Prices()) -> None:
        if concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {concurrency}")
        self.backend = backend
        self.cache = cache if backend.cacheable else None
        self.concurrency = concurrency
        self.prices = prices
        self.account = Account()
        self.exchanges: list[Exchange] = []

    def ask(self, requests: Sequence[Request], metas: Sequence[dict[str, Any]] | None = None) -> list[Exchange]:
        """The exchanges for ``requests``, in their order."""
        metas = metas or [{} for _ in requests]
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(requests)):
            todo.put(i)
        done: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((i, self._one(requests[i])))
                except BaseException as err:  # noqa: BLE001 (stop the others; the caller raises it)
                    stop.set()
                    done.put((i, err))

        for _ in range(min(self.concurrency, len(requests))):
            threading.Thread(target=work, daemon=True).start()
        out: list[Exchange | None] = [None] * len(requests)
        for _ in range(len(requests)):
            i, result = done.get()
            if isinstance(result, BaseException):
                stop.set()
                raise result
            reply, cached, seconds = result
            out[i] = Exchange(requests[i], reply, cached, seconds, dict(metas[i]))
            self.account.add(reply, cached, self.prices)
            advance(1)
        exchanges = [e for e in out if e is not None]
        self.exchanges.extend(exchanges)
        return exchanges

    def _one(self, request: Request) -> tuple[Reply, bool, float]:
        tic = time.perf_counter()
        key = request.cache_key(self.backend.identity)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            # a reply cached before masking existed may still hold a secret
            return self.backend.redact(hit), True, time.perf_counter() - tic
        reply = self.backend.complete(request)
        if self.cache is not None:
            self.cache.put(key, reply)
        return reply, False, time.perf_counter() - tic

    def transcript(self) -> str:
        """Every exchange so far as JSON lines (what ``ReplayBackend`` reads)."""
        return "".join(json.dumps(e.record(self.backend), ensure_ascii=False) + "\n" for e in self.exchanges)

    def summary(self) -> dict[str, Any]:
        return {"backend": self.backend.identity, **asdict(self.account),
                "cost_usd": round(self.account.cost_usd, 6), "prices_per_million": asdict(self.prices)}
