"""A transcript is read back only if every line is a record of the expected types: a tampered, truncated
or binary file is an InputError naming the file and the line, never a crash later in the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.llm.server import Answer, serving
from xaibench.core.errors import InputError
from xaibench.llm.backends import BACKENDS, Request, Settings, read_transcript
from xaibench.llm.client import Client

RECORD = {"prompt_key": "0f" * 32, "backend": "openai http://127.0.0.1:11434/v1", "model": "scripted",
          "messages": [{"role": "user", "content": "Which features matter?"}], "temperature": 0.0,
          "max_tokens": 1024, "seed": 0, "reply": "Answer: A, B", "prompt_tokens": 100, "completion_tokens": 20,
          "cached": False, "seconds": 0.25, "sample": 0, "strategy": "p-icl"}


def write(path: Path, *lines: str | dict) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_a_valid_transcript_reads_back(tmp_path: Path) -> None:
    path = write(tmp_path / "transcript.jsonl", RECORD, "", {**RECORD, "prompt_tokens": None})
    assert read_transcript(path) == [RECORD, {**RECORD, "prompt_tokens": None}]


@pytest.mark.parametrize(("line", "why"), [
    ({**RECORD, "reply": None}, "'reply' must be a string, not null"),
    ({**RECORD, "reply": ["A", "B"]}, "'reply' must be a string, not a list"),
    ({**RECORD, "prompt_key": 7}, "'prompt_key' must be a string, not a number"),
    ({**RECORD, "model": {"name": "x"}}, "'model' must be a string, not an object"),
    ({**RECORD, "prompt_tokens": "100"}, "'prompt_tokens' must be a whole number or null, not a string"),
    ({**RECORD, "completion_tokens": True}, "'completion_tokens' must be a whole number or null, not a boolean"),
    ({**RECORD, "completion_tokens": -3}, "'completion_tokens' must be a whole number or null, not -3"),
    ({k: v for k, v in RECORD.items() if k != "reply"}, "no 'reply'"),
    ('{"prompt_key": "0f0f", "reply": "Answ', "not JSON"),
    ("[" * 100_000, "not JSON"),  # nested past the parser's recursion limit
    ("[1, 2]", "not a JSON object"),
    ("NaN", "not a JSON object"),
])
def test_a_tampered_line_names_the_file_and_the_line(tmp_path: Path, line: str | dict, why: str) -> None:
    path = write(tmp_path / "transcript.jsonl", RECORD, line)
    with pytest.raises(InputError) as caught:
        read_transcript(path)
    assert str(caught.value) == f"{path}:2 is not a transcript record: {why}"


def test_a_binary_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(json.dumps(RECORD).encode() + b"\n\x89PNG\r\n\x1a\n\xff\xfe\x00\x01")
    with pytest.raises(InputError) as caught:
        BACKENDS.get("replay")(Settings(transcript=str(path)))
    assert str(caught.value) == f"{path}:2 is not a transcript record: not UTF-8 text"


def test_a_reply_with_unicode_line_separators_replays_intact(tmp_path: Path) -> None:
    """U+2028 and U+2029 are written raw (ensure_ascii=False) and are no line breaks of the JSON lines."""
    text = "Reasoning\u2028more\u2029\x85Answer: B, A"
    with serving(lambda body: Answer(text=text)) as server:
        client = Client(BACKENDS.get("openai")(Settings(base_url=server.url)), cache=None)
        client.ask([Request("scripted", (("user", "q"),))])
    path = tmp_path / "transcript.jsonl"
    path.write_text(client.transcript(), encoding="utf-8")
    replay = BACKENDS.get("replay")(Settings(transcript=str(path)))
    assert replay.complete(Request("scripted", (("user", "q"),))).text == text


def test_a_fifo_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A FIFO would block the reader forever: refused before it is opened (a timer unblocks a regression)."""
    import os
    import threading

    fifo = tmp_path / "transcript.jsonl"
    os.mkfifo(fifo)
    release = threading.Timer(5.0, lambda: open(fifo, "wb").close())  # a blocked open() returns then
    release.start()
    try:
        with pytest.raises(InputError, match="not a regular file"):
            read_transcript(fifo)
    finally:
        release.cancel()
