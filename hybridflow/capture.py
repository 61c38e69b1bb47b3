"""Capturing raw webhook bodies for ``hybridflow replay``: what ``serve`` saw, with secrets redacted."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybridflow.logs import redact


class Capture:
    """Appends bodies to a JSON-lines file (path ending in .jsonl/.ndjson) or writes one file each in a directory."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.lines = self.path.suffix in (".jsonl", ".ndjson")
        (self.path.parent if self.lines else self.path).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, body: Any) -> None:
        text = json.dumps(redact(body), ensure_ascii=False)
        if self.lines:
            with self._lock, self.path.open("a", encoding="utf-8") as handle:
                handle.write(text + "\n")
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        event = str(body.get("event", "body")).replace("/", "_") if isinstance(body, dict) else "body"
        (self.path / f"{stamp}-{event}-{uuid.uuid4().hex[:6]}.json").write_text(text, encoding="utf-8")
