"""Run every command shown in README.md and docs/*.md and write what it printed into the page.

    .venv/bin/python docs/refresh.py                  # refresh every page (a few minutes on 2 cores)
    .venv/bin/python docs/refresh.py docs/bee.md      # only these pages
    .venv/bin/python docs/refresh.py --check          # change nothing; exit 1 if a page would change

The convention (tests/test_docs.py reads the same blocks with ``console_blocks`` below):

    ```console
    $ xaibench explain sample_models/digits_cnn.pt -n 4 --out runs/ig
    Explained 4 samples with integrated_gradients in 1.6 s
    $ xaibench evaluate sample_models/breast_cancer_logreg.pt --methods saliency,random \
        --metrics deletion -n 8 --out runs/eval
    ...
    ```

- A fenced block whose info string starts with ``console`` holds commands and their output. A line
  starting with ``$ `` is a command (a line ending in `` \\`` continues it on the next line); the lines
  after it, up to the next command or the end of the block, are its output.
- Each page runs its blocks in order, in a fresh scratch folder of its own (so runs/, policies/ and
  factors/ land there), where ``sample_models`` and ``docs`` are links to the repository's folders.
  Commands run in bash with the virtual environment's ``bin`` first on PATH and a fixed environment:
  COLUMNS=100 (rich lays tables out for 100 columns), NO_COLOR=1, TERM=dumb, no XAIBENCH_* or OPENAI_*
  variable but XAIBENCH_CACHE_DIR, which points into the scratch folder (every LLM request is fresh).
- The output written is the command's stdout, trailing spaces removed. A command shown failing (its
  shown output has a line starting with ``error:``) must exit non-zero, and its stderr is written too;
  any other command must exit 0. Otherwise the refresh stops and names the command.
- Info string options, space-separated after ``console``:
    ``norun``       an example that is not run and not rewritten (a server, a cluster, a paid API);
                    tests/test_docs.py still checks that its xaibench commands parse.
    ``columns=N``   lay the block's output out for N columns instead of 100 (wide listings).
- Trimmed output: a line that is exactly ``...`` in a command's shown output keeps as many lines before
  it and after it as are shown there, with ``...`` between them (the whole output when it is shorter).
- Numbers that depend on timing (``in 12.3 s``, ``"seconds": 1.577``) are what this run measured;
  ``--check`` ignores them when it compares.
- The LLM page replays ``docs/llm-transcript.jsonl``: before the pages run, this script records it by
  running ``LLM_RECORDINGS`` against a scripted chat-completions server on 127.0.0.1 that answers every
  prompt with ``SCRIPTED_REPLY`` (no LLM is reachable where xaibench is built).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLUMNS = 100
TRANSCRIPT = "docs/llm-transcript.jsonl"
SCRIPTED_REPLY = "Looking at the changes, C and A move the output.\nAnswer: C, A, AB, W, U"
SCRIPTED_PORT = 8089  # the port the transcript records; another free one if it is taken
#: what the LLM page replays (docs/llm.md shows the same model, samples and parameters)
LLM_RECORDINGS = (
    "xaibench llm-explain sample_models/breast_cancer_logreg.pt --llm scripted --base-url {url} -n 1 "
    "--out runs/llm",
    "xaibench evaluate sample_models/breast_cancer_logreg.pt --methods llm --metrics feature_agreement "
    "--reference coefficients -n 8 -p llm.llm_model=scripted -p llm.base_url={url} --out runs/eval",
)
FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")
TIMING = re.compile(r"\d+(?:\.\d+)? s\b|\"seconds\": [\d.]+")


@dataclass
class Command:
    """One ``$`` command of a console block: its text (continuation lines included) and shown output."""

    lines: list[str]  # as written, "$ " included
    output: list[str]

    @property
    def text(self) -> str:
        """The command as a shell reads it (continuations joined)."""
        joined = "\n".join(self.lines)[2:]
        return re.sub(r"\\\n\s*", "", joined)

    @property
    def shown_failing(self) -> bool:
        return any(line.startswith("error:") for line in self.output)


@dataclass
class Block:
    """A fenced ``console`` block: where it is in the page, its options and its commands."""

    start: int  # line index of the opening fence
    end: int  # line index of the closing fence
    options: dict[str, str] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return "norun" not in self.options


def console_blocks(text: str) -> list[Block]:
    """Every fenced ``console`` block of a Markdown page, with its commands and their shown output."""
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])  # outside a block, every fence opens one
        if not match:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        if end is None:
            raise ValueError(f"line {i + 1}: a code block that is never closed")
        if match.group(1) == "console":
            blocks.append(_block(lines, i, end, match.group(2)))
        i = end + 1
    return blocks


def _block(lines: list[str], start: int, end: int, info: str) -> Block:
    options = dict(item.partition("=")[::2] for item in info.split())
    block = Block(start, end, options)
    continued = False
    for number, line in enumerate(lines[start + 1:end], start + 2):
        if continued:
            block.commands[-1].lines.append(line)
        elif line.startswith("$ "):
            block.commands.append(Command([line], []))
        elif block.commands:
            block.commands[-1].output.append(line)
        elif block.runs:
            raise ValueError(f"line {number}: a console block must start with a '$ ' command")
        continued = line.endswith("\\") and (continued or line.startswith("$ "))
    return block


# ---------------------------------------------------------------------------------------------
# running a page


def environment(scratch: Path, columns: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XAIBENCH_", "OPENAI_"))}
    env.update(COLUMNS=str(columns), LINES="50", NO_COLOR="1", TERM="dumb", PYTHONHASHSEED="0",
               CUDA_VISIBLE_DEVICES="", XAIBENCH_CACHE_DIR=str(scratch / ".cache"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("VIRTUAL_ENV", None)
    return env


def scratch_folder(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir()
    for linked in ("sample_models", "docs"):
        (folder / linked).symlink_to(REPO / linked, target_is_directory=True)
    return folder


class CommandFailed(RuntimeError):
    pass


def run(command: Command, cwd: Path, columns: int) -> list[str]:
    """Run one command; its output lines as the page shows them."""
    started = time.perf_counter()
    done = subprocess.run(["bash", "-c", command.text], cwd=cwd, env=environment(cwd, columns),
                          capture_output=True, text=True)
    print(f"  {time.perf_counter() - started:6.1f} s  $ {command.text}", file=sys.stderr)
    failed = done.returncode != 0
    if failed != command.shown_failing:
        what = "failed" if failed else "succeeded, but the page shows it failing"
        raise CommandFailed(f"{what} (exit code {done.returncode}): $ {command.text}\n{done.stderr[-3000:]}")
    text = done.stdout + (done.stderr if failed else "")
    return [line.rstrip() for line in text.rstrip("\n").split("\n")] if text.strip() else []


def trimmed(output: list[str], shown: list[str]) -> list[str]:
    """``output`` cut as ``shown`` is: the lines around its ``...`` line."""
    if "..." not in shown:
        return output
    cut = shown.index("...")
    head, tail = cut, len(shown) - cut - 1
    if len(output) <= head + tail + 1:
        return output
    return [*output[:head], "...", *(output[len(output) - tail:] if tail else [])]


def run_page(path: Path, scratch: Path) -> str:
    """Run a page's commands in page order in ``scratch``; the page with their output written in."""
    text = path.read_text(encoding="utf-8")
    blocks = [block for block in console_blocks(text) if block.runs]
    bodies = []
    for block in blocks:
        columns = int(block.options.get("columns", COLUMNS))
        body = []
        for command in block.commands:
            body += [*command.lines, *trimmed(run(command, scratch, columns), command.output)]
        bodies.append(body)
    lines = text.split("\n")
    for block, body in reversed(list(zip(blocks, bodies))):  # from the end: earlier indices stay valid
        lines[block.start + 1:block.end] = body
    return "\n".join(lines)


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# ---------------------------------------------------------------------------------------------
# the LLM transcript


@contextmanager
def scripted_server() -> Iterator[str]:
    """A chat-completions server on 127.0.0.1 that answers every request with SCRIPTED_REPLY."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server calls it by this name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            payload = json.dumps({
                "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
                "model": body.get("model", "scripted"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": SCRIPTED_REPLY}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", SCRIPTED_PORT), Handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def record_transcript(scratch: Path) -> str:
    """The exchanges of LLM_RECORDINGS with the scripted server, as transcript.jsonl text."""
    folder = scratch_folder(scratch, "llm-recording")
    with scripted_server() as url:
        for recording in LLM_RECORDINGS:
            command = Command([f"$ {recording.format(url=url)}"], [])
            run(command, folder, COLUMNS)
    parts = [(folder / "runs" / "llm" / "transcript.jsonl"), (folder / "runs" / "eval" / "llm.transcript.jsonl")]
    return "".join(part.read_text(encoding="utf-8") for part in parts)


def _exchanges(text: str) -> list[tuple[str, str]]:
    return [(record["prompt_key"], record["reply"]) for record in map(json.loads, text.splitlines()) if record]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="pages to refresh (default: README.md, docs/*.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page would change "
                        "(timings ignored)")
    args = parser.parse_args(argv)
    chosen = [path.resolve() for path in args.pages] or pages()
    stale = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xaibench-docs-") as tmp:
        scratch = Path(tmp)
        if any(TRANSCRIPT in path.read_text(encoding="utf-8") for path in chosen):
            print(f"recording {TRANSCRIPT} with a scripted server", file=sys.stderr)
            recorded, transcript = record_transcript(scratch), REPO / TRANSCRIPT
            old = transcript.read_text(encoding="utf-8") if transcript.exists() else ""
            if _exchanges(recorded) != _exchanges(old):
                stale.append(transcript)
                if not args.check:
                    transcript.write_text(recorded, encoding="utf-8")
        for number, path in enumerate(chosen):
            print(f"{path.relative_to(REPO)}", file=sys.stderr)
            try:
                new = run_page(path, scratch_folder(scratch, f"page{number}"))
            except CommandFailed as err:
                print(f"{path.relative_to(REPO)}: {err}", file=sys.stderr)
                return 2
            old = path.read_text(encoding="utf-8")
            if TIMING.sub("#", new) != TIMING.sub("#", old):
                stale.append(path)
            if not args.check and new != old:
                path.write_text(new, encoding="utf-8")
    print(f"{len(chosen)} pages in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    for path in stale:
        what = "would change" if args.check else "changed (more than timings)"
        print(f"{what}: {path.relative_to(REPO)}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
