"""Every LLM test gets its own response cache, never the user's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XAIBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"
