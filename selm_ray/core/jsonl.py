"""One policy for every JSONL log the project writes and reads back (buffer pairs and exits,
created prompts, metrics, live stats).

A row is one JSON object followed by a newline; writers emit row and newline in one write.
- A torn tail (bytes after the last newline: a process killed mid-write) is not a row. Readers
  leave it out and count it; ``AppendLog`` cuts it off before appending, so the next row starts
  on a line of its own instead of being glued onto the fragment (and lost at the next read).
- A damaged row before the tail is an error naming the file and line: such a log cannot be trusted.
User datasets are not logs: core/data.py reads them with its own ``on_bad_row`` policy.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable


class LogError(ValueError):
    """A log row before the end of the file is not a JSON object; the message names file:line."""


@dataclass
class LogRead:
    rows: list[dict[str, Any]] = field(default_factory=list)
    torn: int = 0  # 1 when the file ended in a torn row (left out)


def read_log(path: str | Path) -> LogRead:
    """The rows of a log (empty when it does not exist), without its torn tail."""
    path = Path(path)
    out = LogRead()
    if not path.is_file():
        return out
    text = path.read_text(encoding="utf-8")
    body, _, tail = text.rpartition("\n")
    out.torn = int(bool(tail.strip()))
    for n, line in enumerate(body.split("\n") if body or text.startswith("\n") else [], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LogError(f"{path}:{n}: not JSON ({e})") from None
        if not isinstance(row, dict):
            raise LogError(f"{path}:{n}: not a JSON object")
        out.rows.append(row)
    return out


def cut_torn_tail(path: str | Path) -> int:
    """Remove a torn tail from ``path`` in place; returns the bytes removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open("rb+") as fh:
        data = fh.read()
        keep = data.rfind(b"\n") + 1
        if keep == len(data):
            return 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return len(data) - keep


class AppendLog:
    """An append-only JSONL log. With ``durable``, each append is fsynced before it returns (the
    caller may acknowledge what it wrote); else it is flushed only."""

    def __init__(self, path: str | Path, durable: bool = True) -> None:
        self.path, self.durable = Path(path), durable
        self.cut_bytes = cut_torn_tail(self.path)
        self.fh: IO[str] = self.path.open("a", encoding="utf-8")

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if data:
            self.fh.write(data)
            self.fh.flush()
            if self.durable:
                os.fsync(self.fh.fileno())

    def write(self, row: dict[str, Any]) -> None:
        self.append([row])

    def close(self) -> None:
        self.fh.close()
