"""A response cache in sqlite (standard library): a rerun with the same backend, model, messages and
sampling parameters costs nothing.

The file is ``$XAIBENCH_CACHE_DIR/llm.sqlite`` (default ``$XDG_CACHE_HOME/xaibench`` or
``~/.cache/xaibench``). Only successful replies are stored; keys are ``Request.cache_key`` digests, so
the file holds prompts' hashes and replies, never a key or a header.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from xaibench.core.errors import InputError
from xaibench.llm.backends import Reply


def default_cache_path() -> Path:
    root = os.environ.get("XAIBENCH_CACHE_DIR")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xaibench")
    return Path(root) / "llm.sqlite"


class ResponseCache:
    """Thread-safe get / put of replies by key."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                             "prompt_tokens INTEGER, completion_tokens INTEGER, stored REAL NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as err:
            raise InputError(f"cannot open the LLM response cache {self.path}: {err}") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._db.execute("SELECT text, prompt_tokens, completion_tokens FROM replies WHERE key = ?",
                                   (key,)).fetchone()
        return Reply(*row) if row else None

    def put(self, key: str, reply: Reply) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?)",
                             (key, reply.text, reply.prompt_tokens, reply.completion_tokens, time.time()))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()
