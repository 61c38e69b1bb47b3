"""The test suite's fake Evolution and fake Ollama, noting when each probe's requests arrive.

Times are ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every process of the machine, so they compare
with the times the load-generator process notes when it posts a probe.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.fakes import FakeEvolution, FakeOllama  # noqa: E402

from traffic import PROBE_TOKEN  # noqa: E402

_ARRIVED = web.RequestKey("arrived", float)


def _token(text: Any) -> str | None:
    match = PROBE_TOKEN.search(text) if isinstance(text, str) else None
    return match.group(0) if match else None


class TimedEvolution(FakeEvolution):
    """FakeEvolution that notes when the sendText carrying each probe token arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.send_arrivals: dict[str, float] = {}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request[_ARRIVED] = time.monotonic()
        return await super()._handle(request)

    async def _send_text(self, request: web.Request, params: dict[str, str], body: Any) -> web.StreamResponse:
        token = _token(body.get("text")) if isinstance(body, dict) else None
        if token:
            self.send_arrivals.setdefault(token, request[_ARRIVED])
        return await super()._send_text(request, params, body)


@dataclass(frozen=True, slots=True)
class ModelCall:
    """When a probe's model call reached the fake Ollama, and when the fake answered it."""

    arrived: float
    answered: float


class TimedOllama(FakeOllama):
    """FakeOllama that notes when the chat call for each probe token arrived and when it was answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: dict[str, ModelCall] = {}

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        # A probe is alone in its chat, so its token is the only one in the prompt (aiohttp caches the body).
        token = _token((await request.read()).decode("utf-8", "replace"))
        response = await super()._chat(request)
        if token:
            self.calls.setdefault(token, ModelCall(arrived, time.monotonic()))
        return response
