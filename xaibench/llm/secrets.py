"""Keep secrets out of what xaibench shows and stores: API keys and credentials in a server's URL.

A server may echo the key, whole or in part, in an error or even in a successful reply, and a user may
write ``http://user:password@host`` as the base URL. What a backend hands on (errors, replies, the
name of its server) is masked here first, so that no transcript, run.json, cache entry or terminal
line carries a secret.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from xaibench.core.credentials import without_credentials
from xaibench.core.errors import InputError

__all__ = ["MASK", "check_url", "mask", "url_secrets", "without_credentials"]

MASK = "***"
MIN_RUN = 8  # shorter runs would mask ordinary words (and placeholder keys such as "unused", "ollama")


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every run of at least 8 characters of any secret replaced by ``***``.

    A run of 8 or more characters of a secret is covered by the secret's 8-character windows, so marking
    every window that occurs in ``text`` hides exactly those runs; touching runs merge into one mask.
    """
    windows = {secret[i:i + MIN_RUN] for secret in secrets for i in range(len(secret) - MIN_RUN + 1)}
    if not windows:
        return text
    spans: list[list[int]] = []
    for i in range(len(text) - MIN_RUN + 1):
        if text[i:i + MIN_RUN] in windows:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + MIN_RUN
            else:
                spans.append([i, i + MIN_RUN])
    parts, last = [], 0
    for start, end in spans:
        parts += [text[last:start], MASK]
        last = end
    return "".join(parts) + text[last:]


def url_secrets(url: str) -> list[str]:
    """The password in ``url`` and the Basic credential the HTTP client makes of it (servers echo
    headers back); none without credentials."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return []
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def check_url(url: str) -> None:
    """Refuse a base URL that is not http(s) with a host; the URL is not echoed (it may hold a password).

    Raises:
        InputError: another scheme, no host, or a port that is not a number.
    """
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        valid = False
    if not valid:
        raise InputError("base_url must be an http or https URL with a host, e.g. http://127.0.0.1:11434/v1")
