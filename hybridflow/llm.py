"""The Ollama client and the prompt built from a tenant's system prompt and the chat history.

Failures become ``LLMError`` with ``transient`` saying whether a retry can help:

    model not found (404)               permanent, the message says ``ollama pull <model>``
    other 4xx, out of memory            permanent
    5xx, 408, 429, server busy          transient
    refused connection, timeout, reset  transient
    an empty answer                     permanent (the same prompt would give the same nothing)
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import ollama
import structlog

from hybridflow.errors import LLMError
from hybridflow.http import AiohttpTransport

log = structlog.get_logger("hybridflow.llm")

ROLES = ("user", "assistant")
PROBE_TIMEOUT = 5.0  # seconds a probe of a model server that was down may take
# Reasoning models (deepseek-r1, qwen3 on older Ollama) put their chain of thought in the content.
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation as the model sees it."""

    role: str  # "user" | "assistant"
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the model asked to call, with its arguments (a dict, as Ollama gives them)."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """The model's answer, with Ollama's own token counts (None when Ollama did not report one)."""

    text: str
    prompt_tokens: int | None = None  # prompt_eval_count: the prompt tokens the model evaluated
    answer_tokens: int | None = None  # eval_count: the tokens it generated
    calls: tuple[ToolCall, ...] = ()  # the tools the model called instead of (or besides) answering

    def call(self, name: str) -> ToolCall | None:
        """The model's call of the tool ``name``, if it made one."""
        return next((c for c in self.calls if c.name == name), None)

    @property
    def tokens(self) -> int | None:
        """Prompt and answer together; None when either count is missing (unknown is not zero)."""
        if self.prompt_tokens is None or self.answer_tokens is None:
            return None
        return self.prompt_tokens + self.answer_tokens


def build_messages(system_prompt: str, history: Sequence[Turn]) -> list[dict[str, str]]:
    """System prompt first, then the history in order; same-role neighbours merged, empty texts skipped."""
    messages: list[dict[str, str]] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    for turn in history:
        if turn.role not in ROLES:
            raise ValueError(f"a turn's role must be one of {ROLES}, got {turn.role!r}")
        if not turn.text.strip():
            continue
        last = messages[-1] if messages else None
        # Chat templates expect user and assistant to alternate; two quick messages become one turn.
        if last is not None and last["role"] == turn.role:
            last["content"] = f"{last['content']}\n{turn.text}"
        else:
            messages.append({"role": turn.role, "content": turn.text})
    return messages


def clean_answer(content: str | None) -> str:
    """The answer to send: reasoning blocks removed, whitespace stripped."""
    return _THINK_BLOCK.sub("", content or "").strip()


_SENTENCE_END = re.compile(r"[.!?…](?=[\s\"')\]]|$)|\n")


def cut_at_sentence(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at the end of its last whole sentence when one ends in the
    second half of the limit; else at the last word, marked with "…"."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and ends[-1] >= limit // 2:
        return head[:ends[-1]].rstrip()
    words = head[:limit - 1].rsplit(None, 1)[0] if " " in head.strip() else head[:limit - 1]
    return words.rstrip(" ,;:-") + "…"


class LLMClient:
    """Ollama's AsyncClient with an explicit timeout and HybridFlow's error classification."""

    def __init__(self, *, host: str, timeout: float = 120.0, client: ollama.AsyncClient | None = None) -> None:
        self._host = host
        self._timeout = timeout
        self._owns_client = client is None
        # ollama's own default timeout is None: a stuck model would hold a reply forever.
        self._client = client if client is not None else ollama.AsyncClient(host=host, timeout=timeout,
                                                                             transport=AiohttpTransport())
        self._no_tools: set[str] = set()  # models that answered "does not support tools": asked without them

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections, unless the client was handed in (its owner closes it)."""
        if self._owns_client:
            await self._client.close()

    async def chat(self, *, model: str, messages: list[dict[str, str]], options: dict | None = None,
                   tools: Sequence[dict[str, Any]] | None = None) -> Answer:
        """The assistant's answer to ``messages``, stripped, with its token counts and the ``tools`` it called;
        raises LLMError. A model that does not support tools is asked again without them (and then always)."""
        if tools and model in self._no_tools:
            tools = None
        fields: dict[str, Any] = {"model": model, "messages": len(messages), **({"tools": len(tools)} if tools else {})}
        started = time.perf_counter()
        try:
            response = await self._client.chat(model=model, messages=messages, options=options, stream=False,
                                               tools=list(tools) if tools else None)
        except Exception as exc:
            if tools and _no_tool_support(exc):
                self._no_tools.add(model)
                log.warning("llm.tools_unsupported", model=model, error=str(getattr(exc, "error", exc)),
                            hint="the model answers without tools; pull a model with tool support to use them")
                return await self.chat(model=model, messages=messages, options=options)
            error = self._classify(exc, model)
            if error is None:
                raise
            _log_request(fields, started, error=error)
            raise error from exc
        answer = clean_answer(response.message.content)
        calls = tuple(ToolCall(c.function.name, dict(c.function.arguments or {}))
                      for c in response.message.tool_calls or ())
        fields.update(answer_length=len(answer), prompt_eval_count=response.prompt_eval_count,
                      eval_count=response.eval_count, done_reason=response.done_reason,
                      **({"tool_calls": [c.name for c in calls]} if calls else {}))
        if not answer and not calls:
            error = LLMError(f'model "{model}" returned an empty answer', transient=False)
            _log_request(fields, started, error=error)
            raise error
        _log_request(fields, started, error=None)
        return Answer(answer, response.prompt_eval_count, response.eval_count, calls)

    async def reachable(self) -> bool:
        """Whether the model server answers at all (a cheap probe: the list of its models)."""
        try:
            await asyncio.wait_for(self._client.list(), PROBE_TIMEOUT)
        except Exception:  # noqa: BLE001 - any failure (a timeout too: a host that drops packets) means "not now"
            return False
        return True

    async def model_exists(self, model: str) -> bool:
        """Whether Ollama has ``model`` (``llama3.2`` matches ``llama3.2:latest``); raises LLMError if unreachable."""
        try:
            await self._client.show(model)
        except Exception as exc:
            if isinstance(exc, ollama.ResponseError) and exc.status_code == 404:
                return False
            error = self._classify(exc, model)
            if error is None:
                raise
            raise error from exc
        return True

    def _classify(self, exc: BaseException, model: str) -> LLMError | None:
        """Our error for what the ollama client raised, or None for a programming error to let through."""
        where = f"Ollama at {self._host}"
        if isinstance(exc, ollama.ResponseError):
            return _response_error(exc, model, where)
        if isinstance(exc, ConnectionError):  # what ollama turns httpx.ConnectError into
            return LLMError(f"cannot connect to {where}: connection refused or server down", transient=True,
                            unreachable=True)
        if isinstance(exc, httpx.TimeoutException):  # ollama lets these through unwrapped
            return LLMError(f"{where} timed out after {self._timeout:g}s (model {model})", transient=True)
        if isinstance(exc, httpx.UnsupportedProtocol):
            return LLMError(f"invalid Ollama host {self._host!r}: {exc}", transient=False)
        if isinstance(exc, httpx.HTTPError):
            return LLMError(f"{where}: {type(exc).__name__}: {exc}", transient=True)
        if isinstance(exc, ollama.RequestError):
            return LLMError(f"invalid request to Ollama: {exc}", transient=False)
        if isinstance(exc, json.JSONDecodeError):  # e.g. a proxy's HTML page answered with 200
            return LLMError(f"{where} answered with something that is not JSON: {exc}", transient=True)
        return None


def _no_tool_support(exc: BaseException) -> bool:
    """Ollama's 400 for tools given to a model whose template has none ("... does not support tools")."""
    return (isinstance(exc, ollama.ResponseError) and exc.status_code == 400
            and "does not support tools" in str(exc.error).lower())


def _response_error(exc: ollama.ResponseError, model: str, where: str) -> LLMError:
    status = exc.status_code
    reason = str(exc.error).strip()
    if status == 404 or (status in (400, -1) and "not found" in reason.lower()):
        return LLMError(
            f'model "{model}" is not available on {where}: run `ollama pull {model}` ({reason})',
            transient=False,
            http_status=status if status > 0 else None,
        )
    http_status = status if status > 0 else None
    if "system memory" in reason:  # "model requires more system memory (X GiB) than is available"
        return LLMError(f'model "{model}" does not fit on {where}: {reason}', transient=False, http_status=http_status)
    transient = status < 0 or status >= 500 or status in (408, 429)
    return LLMError(f"{where} failed with HTTP {status}: {reason}", transient=transient, http_status=http_status)


def _log_request(fields: dict[str, Any], started: float, *, error: LLMError | None) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    if error is None:
        log.info("llm.request", **fields, duration_ms=duration_ms, outcome="ok")
        return
    outcome = "transient_error" if error.transient else "permanent_error"
    log.warning("llm.request", **fields, duration_ms=duration_ms, outcome=outcome, error=error.message)
