"""Where a prompt goes and a reply comes from: a registry of LLM backends.

- ``openai``: any OpenAI-compatible chat-completions server through the official ``openai`` client
  (OpenAI, Ollama at /v1, vLLM, llama.cpp's llama-server). The client retries 408, 409, 429 and 5xx
  replies and timeouts with exponential backoff (0.5 s doubling up to 8 s, less up to 25% jitter, or the
  server's Retry-After); ``retries`` bounds the retries and ``timeout`` each attempt. The key is read
  from an environment variable only, sent in the request header and nowhere else: never in a
  transcript, run.json or an error message. OPENAI_API_KEY is sent to OpenAI's own server only; another
  server (a local Ollama, a colleague's vLLM) gets a key only from a variable named for it. Errors and
  replies are masked (``xaibench.llm.secrets``): a server that echoes the key, or 8 characters of it,
  or the password of a ``user:password@`` base URL, shows ``***``; the server is named without them.
- ``replay``: the replies of a recorded run's transcript.jsonl, matched by prompt, for exact reruns.
- ``transformers``: a local model directory, offline (``xaibench.llm.local``, an optional extra).

A backend answers one request at a time and must be safe to call from several threads (the client runs
``concurrency`` requests at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from xaibench.core.errors import InputError, RunFailedError
from xaibench.core.registry import Registry
from xaibench.llm.secrets import check_url, mask, url_secrets, without_credentials

BACKENDS: Registry[type[Backend]] = Registry("LLM backend",
                                             modules=("xaibench.llm.backends", "xaibench.llm.local"))


class LLMError(RunFailedError):
    """A request that failed for good: no reply in time, refused, or not understood (exit code 1)."""


@dataclass(frozen=True)
class Request:
    """One chat-completions request: the model, the messages and the sampling parameters."""

    model: str
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    temperature: float = 0.0
    max_tokens: int = 1024
    seed: int | None = 0

    def wire_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def prompt_key(self) -> str:
        """Identifies the prompt and sampling, not the model: what the replay backend matches on."""
        return _digest({"messages": self.wire_messages(), "temperature": self.temperature,
                        "max_tokens": self.max_tokens, "seed": self.seed})

    def cache_key(self, backend: str) -> str:
        """Identifies the reply in the response cache: backend (with its server), model and prompt."""
        return _digest({"backend": backend, "model": self.model, "prompt": self.prompt_key()})


@dataclass(frozen=True)
class Reply:
    """The reply's text and the token counts the server reported (None where it reports none)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Settings:
    """How to reach a backend; no key (it stays in the environment).

    Attributes:
        base_url: the server's http(s) /v1 URL (openai); None uses the client's default (OPENAI_BASE_URL
            or OpenAI's own). A ``user:password@`` in it is sent, never shown by the backend.
        api_key_env: the environment variable holding the key (openai); None: OPENAI_API_KEY when the
            server is OpenAI's own, else no key.
        timeout: seconds per attempt.
        retries: retries after the first attempt on 408/409/429/5xx, timeouts and lost connections.
        transcript: the transcript.jsonl to replay (replay).
    """

    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float = 120.0
    retries: int = 2
    transcript: str | None = None


class Backend:
    """Base class: ``complete`` answers a request; ``identity`` names the source of replies in the cache
    key; ``cacheable`` is False for backends whose replies are already stored (replay)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    cacheable: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def identity(self) -> str:
        return self.name

    @property
    def default_model(self) -> str | None:
        """The model asked for when none is named (replay: the recorded one)."""
        return None

    def complete(self, request: Request) -> Reply:
        raise NotImplementedError

    def redact(self, reply: Reply) -> Reply:
        """``reply`` with this backend's secrets masked (the client applies it to cached replies too)."""
        return reply


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@BACKENDS.register("openai")
class OpenAIBackend(Backend):
    description = "an OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM, llama.cpp)"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if settings.timeout <= 0 or settings.retries < 0:
            raise InputError("timeout must be positive and retries at least 0")
        if settings.base_url is not None:
            check_url(settings.base_url)
        import openai

        self._variable = _key_variable(settings)
        # Local servers ignore the key but the client insists on one.
        self._key = (os.environ.get(self._variable) if self._variable else None) or "unused"
        self._client = openai.OpenAI(base_url=settings.base_url, api_key=self._key, timeout=settings.timeout,
                                     max_retries=settings.retries)
        url = str(self._client.base_url)  # with any user:password@ (OPENAI_BASE_URL too): sent, never shown
        self._where = without_credentials(url).rstrip("/")
        if self._variable is None and _is_openai(self._where):
            self._variable = "OPENAI_API_KEY"  # OPENAI_BASE_URL pointed the client at OpenAI itself
            self._key = os.environ.get(self._variable) or "unused"
            self._client = self._client.with_options(api_key=self._key)
        self._secrets = (self._key, *url_secrets(url))

    @property
    def identity(self) -> str:
        return f"openai {self._where}"

    def complete(self, request: Request) -> Reply:
        import openai

        attempts = f"{self.settings.retries + 1} attempt{'s' if self.settings.retries else ''}"
        try:
            response = self._client.chat.completions.create(
                model=request.model, messages=request.wire_messages(), temperature=request.temperature,
                max_tokens=request.max_tokens, seed=request.seed)
        except openai.APITimeoutError:
            raise LLMError(f"{self._where}: no reply within {self.settings.timeout:g} s ({attempts})") from None
        except openai.APIConnectionError as err:
            raise LLMError(f"{self._where}: cannot connect ({self._clean(err)})") from None
        except openai.AuthenticationError:
            variable = self._variable or "a variable and pass --api-key-env NAME"
            raise LLMError(f"{self._where} refused the API key: set ${variable}") from None
        except openai.APIStatusError as err:
            raise LLMError(f"{self._where} answered HTTP {err.status_code} ({attempts}): "
                           f"{self._clean(err)}") from None
        except (openai.APIError, ValueError) as err:  # a body that is not JSON, or not the expected one
            raise LLMError(f"{self._where}: malformed reply ({self._clean(err)})") from None
        return self._reply(response)

    def _reply(self, response: Any) -> Reply:
        choices = getattr(response, "choices", None)
        message = getattr(choices[0], "message", None) if choices else None
        if message is None or not isinstance(getattr(message, "content", None), str):
            raise LLMError(f"{self._where}: malformed reply (no choices[0].message.content)")
        usage = getattr(response, "usage", None)
        return self.redact(Reply(message.content, getattr(usage, "prompt_tokens", None),
                                 getattr(usage, "completion_tokens", None)))

    def redact(self, reply: Reply) -> Reply:
        return replace(reply, text=mask(reply.text, self._secrets))

    def _clean(self, err: Exception) -> str:
        """The error's first line, masked before it is cut: some servers echo (part of) the key back."""
        text = without_credentials(mask(str(err), self._secrets))
        return (text.strip().splitlines() or [type(err).__name__])[0][:300]


def _key_variable(settings: Settings) -> str | None:
    """The environment variable to read the key from: the one named, else OPENAI_API_KEY for OpenAI's
    own server (no base URL, or one of its hosts), else none."""
    if settings.api_key_env is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", settings.api_key_env):
            raise InputError("api_key_env names an environment variable (letters, digits, _), not the key")
        return settings.api_key_env
    if settings.base_url is None:
        return None  # decided once the client has resolved its URL (OPENAI_BASE_URL or OpenAI's own)
    return "OPENAI_API_KEY" if _is_openai(settings.base_url) else None


def _is_openai(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


@BACKENDS.register("replay")
class ReplayBackend(Backend):
    description = "the replies of a recorded transcript.jsonl (-p transcript=FILE), for exact reruns"
    cacheable = False

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if not settings.transcript:
            raise InputError("the replay backend needs a transcript: -p transcript=RUN_DIR/transcript.jsonl")
        records = read_transcript(Path(settings.transcript))
        self._model = next((r.get("model") for r in records if r.get("model")), None)
        self._replies = {record["prompt_key"]: Reply(record["reply"], record.get("prompt_tokens"),
                                                     record.get("completion_tokens"))
                         for record in records}

    @property
    def identity(self) -> str:
        return f"replay {self.settings.transcript}"

    @property
    def default_model(self) -> str | None:
        return self._model

    def complete(self, request: Request) -> Reply:
        try:
            return self._replies[request.prompt_key()]
        except KeyError:
            raise InputError(f"{self.settings.transcript} holds no reply to this prompt: replay with the "
                             "recorded run's model, data, seed and parameters") from None


def read_transcript(path: Path) -> list[dict[str, Any]]:
    """The exchanges of a transcript.jsonl (a run directory's name finds its transcript), each line
    checked by ``_record``: a tampered line must fail here, not after the run is written.

    Lines are split on newlines only: replies are written unescaped (ensure_ascii=False), and U+2028 or
    U+0085 in a reply is no line break of the file.

    Raises:
        InputError: a missing file or one that is not a regular file, or a line that is not UTF-8, not
            a JSON object, or not a record.
    """
    if path.is_dir():
        path = path / "transcript.jsonl"
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise InputError(f"cannot read transcript {path}: not a regular file")
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as err:
        raise InputError(f"cannot read transcript {path}: {err.strerror or err}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(_record(line))
        except ValueError as err:
            raise InputError(f"{path}:{number} is not a transcript record: {err}") from None
    return records


_TEXTS = ("prompt_key", "model", "reply")  # what replay reads; the other fields are for people
_COUNTS = ("prompt_tokens", "completion_tokens")
_JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
               list: "a list", dict: "an object"}


def _record(line: bytes) -> dict[str, Any]:
    """One transcript line as a record, or a ValueError saying what is wrong with it."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise ValueError("not JSON") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    for name in (*_TEXTS, *_COUNTS):
        if name not in record:
            raise ValueError(f"no {name!r}")
    for name in _TEXTS:
        if not isinstance(record[name], str):
            raise ValueError(f"{name!r} must be a string, not {_JSON_KINDS[type(record[name])]}")
    for name in _COUNTS:
        value = record[name]
        if value is not None and not (type(value) is int and value >= 0):
            shown = value if type(value) is int else _JSON_KINDS[type(value)]
            raise ValueError(f"{name!r} must be a whole number or null, not {shown}")
    return record
