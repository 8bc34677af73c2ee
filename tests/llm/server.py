"""A scripted chat-completions server on 127.0.0.1 for the tests: the OpenAI wire format, no LLM.

``answer(body) -> Answer`` decides each reply (status, JSON or raw body, headers, a delay); the server
records every request's parsed body and Authorization header.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    text: str | None = None  # the reply's content, wrapped in a chat-completions body
    raw: bytes | None = None  # or this body as it is (malformed JSON)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(text: str, prompt_tokens: int = 100, completion_tokens: int = 20) -> dict[str, Any]:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


@dataclass
class Server:
    url: str
    requests: list[dict[str, Any]]
    auth: list[str | None]


@contextmanager
def serving(answer: Callable[[dict[str, Any]], Answer]) -> Iterator[Server]:
    requests: list[dict[str, Any]] = []
    auth: list[str | None] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server calls it by this name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with lock:
                requests.append(body)
                auth.append(self.headers.get("Authorization"))
            reply = answer(body)
            time.sleep(reply.delay)
            payload = reply.raw if reply.raw is not None else json.dumps(
                completion(reply.text or "") if reply.status == 200 else
                {"error": {"message": f"scripted {reply.status}", "type": "server_error"}}).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.server_address[1]}/v1", requests, auth)
    finally:
        server.shutdown()
        server.server_close()
