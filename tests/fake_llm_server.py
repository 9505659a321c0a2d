"""A scriptable fake OpenAI-compatible chat-completions server for tests.

The server is a real aiohttp HTTP server bound to ``127.0.0.1`` on a random
free port, running in a background thread of the test process. Clients (for
example litellm with ``custom_llm_provider="openai"`` and
``api_base=server.base_url``) talk to it over real HTTP; nothing is patched.

Driving it
----------
Each incoming ``POST /v1/chat/completions`` (or ``/chat/completions``) is
answered by a :class:`Reply`. The reply is chosen, in order, by:

1. the FIFO queue filled with :meth:`FakeLLMServer.enqueue`;
2. the handler callable set with :meth:`FakeLLMServer.set_handler` (or the
   ``handler=`` constructor argument), called with the
   :class:`RecordedRequest`;
3. the default: ``Reply.ok("ok")``.

Replies can be plain text, tool calls, delayed (``delay_s``), HTTP errors with
headers (429 + ``Retry-After``, 500, 401, ...), hangs (no answer until the
client disconnects or the server stops), or malformed bodies.
:func:`random_failures` builds a seeded handler that fails a fraction of
requests.

Every request is recorded (arrival time from ``time.monotonic()``, path, parsed
JSON body, headers) in :attr:`FakeLLMServer.requests`, so tests can measure
request rates and inspect prompts.

Usage::

    with FakeLLMServer() as server:
        server.enqueue(Reply.rate_limit(retry_after_s=1), Reply.ok("hi"))
        ...  # call an LLM client with base_url=server.base_url
        assert len(server.requests) == 2

or through the :func:`fake_llm_server` pytest fixture.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

__all__ = [
    "FakeLLMServer",
    "RecordedRequest",
    "Reply",
    "fake_llm_server",
    "random_failures",
]


@dataclass
class Reply:
    """What the fake server does with one request.

    ``kind`` is one of ``"ok"`` (a completion: ``text`` and/or ``tool_calls``),
    ``"error"`` (HTTP ``status`` with an OpenAI-style error body),
    ``"hang"`` (never answer; the connection stays open until the client gives
    up or the server stops), ``"invalid_json"`` (HTTP 200 with a body that is
    not JSON) or ``"missing_fields"`` (HTTP 200, valid JSON without
    ``choices``). ``delay_s`` is slept before answering for every kind.
    """

    kind: str = "ok"
    text: str | None = "ok"
    tool_calls: list[dict[str, Any]] | None = None
    status: int = 200
    error_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def ok(
        cls,
        text: str = "ok",
        *,
        delay_s: float = 0.0,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        finish_reason: str | None = None,
    ) -> Reply:
        """A plain assistant text reply."""
        return cls(
            kind="ok",
            text=text,
            delay_s=delay_s,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
        )

    @classmethod
    def tools(
        cls,
        *calls: tuple[str, dict[str, Any] | str],
        text: str | None = None,
        delay_s: float = 0.0,
    ) -> Reply:
        """An assistant reply calling tools: ``Reply.tools(("get_user", {"id": 1}))``."""
        tool_calls = []
        for i, (name, arguments) in enumerate(calls):
            args = arguments if isinstance(arguments, str) else json.dumps(arguments)
            tool_calls.append(
                {
                    "id": f"call_{i}_{name}",
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }
            )
        return cls(kind="ok", text=text, tool_calls=tool_calls, delay_s=delay_s)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "fake error",
        *,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> Reply:
        """An HTTP error with an OpenAI-style ``{"error": {...}}`` body."""
        return cls(
            kind="error",
            status=status,
            error_message=message,
            headers=dict(headers or {}),
            delay_s=delay_s,
        )

    @classmethod
    def rate_limit(cls, retry_after_s: float | None = None, message: str = "Rate limit reached") -> Reply:
        """HTTP 429, with a ``Retry-After`` header (seconds) when given."""
        headers = {} if retry_after_s is None else {"Retry-After": _fmt_seconds(retry_after_s)}
        return cls.error(429, message, headers=headers)

    @classmethod
    def server_error(cls, status: int = 500, message: str = "Internal server error") -> Reply:
        """An HTTP 5xx error."""
        return cls.error(status, message)

    @classmethod
    def hang(cls) -> Reply:
        """Never answer (until the client disconnects or the server stops)."""
        return cls(kind="hang")

    @classmethod
    def invalid_json(cls) -> Reply:
        """HTTP 200 whose body is not JSON."""
        return cls(kind="invalid_json")

    @classmethod
    def missing_fields(cls) -> Reply:
        """HTTP 200 with valid JSON that lacks ``choices``/``usage``."""
        return cls(kind="missing_fields")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; ``t`` is ``time.monotonic()`` at arrival."""

    index: int
    t: float
    path: str
    body: dict[str, Any] | None
    headers: dict[str, str]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` of the request body (empty when absent)."""
        return list((self.body or {}).get("messages") or [])


Handler = Callable[[RecordedRequest], Reply]


def random_failures(
    failure_ratio: float,
    seed: int,
    *,
    kinds: Sequence[str] = ("429", "500", "hang"),
    retry_after_s: float | None = None,
    ok: Callable[[RecordedRequest], Reply] | None = None,
) -> Handler:
    """A handler failing ``failure_ratio`` of requests, reproducibly for a seed.

    The i-th request to reach the server fails with probability
    ``failure_ratio``; the failure kind is drawn uniformly from ``kinds``
    (``"429"``, ``"500"``, ``"503"``, ``"hang"``, ``"invalid_json"``,
    ``"missing_fields"``). Successful requests get ``ok(request)`` (default
    ``Reply.ok("ok")``).
    """
    rng = random.Random(seed)
    lock = threading.Lock()

    def handler(request: RecordedRequest) -> Reply:
        with lock:
            fail = rng.random() < failure_ratio
            kind = rng.choice(list(kinds))
        if not fail:
            return ok(request) if ok is not None else Reply.ok("ok")
        if kind == "429":
            return Reply.rate_limit(retry_after_s)
        if kind in ("500", "502", "503"):
            return Reply.server_error(int(kind))
        if kind == "hang":
            return Reply.hang()
        if kind == "invalid_json":
            return Reply.invalid_json()
        if kind == "missing_fields":
            return Reply.missing_fields()
        raise ValueError(f"unknown failure kind {kind!r}")

    return handler


def _fmt_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _estimate_tokens(body: dict[str, Any] | None) -> int:
    if not body:
        return 0
    return max(1, len(json.dumps(body.get("messages", []))) // 4)


class FakeLLMServer:
    """A scriptable OpenAI-compatible server on 127.0.0.1 (see module docstring).

    Use as a context manager (or call :meth:`start` / :meth:`stop`).
    ``base_url`` is ``http://127.0.0.1:PORT/v1``.
    """

    def __init__(self, handler: Handler | None = None, *, hang_max_s: float = 120.0) -> None:
        self._handler = handler
        self._queue: collections.deque[Reply] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._hang_max_s = hang_max_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._port: int | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    # ------------------------------------------------------------------ script
    def enqueue(self, *replies: Reply) -> None:
        """Queue replies; each request consumes the next one, FIFO."""
        with self._lock:
            self._queue.extend(replies)

    def set_handler(self, handler: Handler | None) -> None:
        """Decide replies with ``handler(request)`` once the queue is empty."""
        with self._lock:
            self._handler = handler

    def reset(self) -> None:
        """Forget recorded requests, queued replies and the handler."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._handler = None
            self.max_in_flight = self.in_flight

    # ------------------------------------------------------------- inspection
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of all recorded requests, in arrival order."""
        with self._lock:
            return list(self._requests)

    def request_times(self) -> list[float]:
        """Arrival times (``time.monotonic()``) of all recorded requests."""
        return [r.t for r in self.requests]

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``; pass as an OpenAI-compatible base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -------------------------------------------------------------- lifecycle
    def start(self) -> FakeLLMServer:
        """Start serving in a background thread; returns once it accepts connections."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(sock))
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-llm-server", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        if errors:
            raise RuntimeError(f"fake LLM server failed to start: {errors[0]!r}")
        return self

    async def _serve(self, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock)
        await site.start()

    def stop(self) -> None:
        """Stop the server: hanging requests are released and the thread joined."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            assert self._stopping is not None
            self._stopping.set()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = None
            self._loop = None

    def __enter__(self) -> FakeLLMServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- serving
    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            handler = self._handler
        return handler(request) if handler is not None else Reply.ok("ok")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            recorded = RecordedRequest(
                index=len(self._requests),
                t=arrived,
                path=request.path,
                body=body,
                headers=dict(request.headers),
            )
            self._requests.append(recorded)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self._next_reply(recorded)
            if reply.delay_s > 0:
                await asyncio.sleep(reply.delay_s)
            return await self._respond(reply, recorded)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _respond(self, reply: Reply, request: RecordedRequest) -> web.StreamResponse:
        if reply.kind == "hang":
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self._hang_max_s)
            except asyncio.TimeoutError:
                pass
            return web.Response(status=504, text="hang ended")
        if reply.kind == "error":
            payload = {
                "error": {
                    "message": reply.error_message,
                    "type": "fake_error",
                    "param": None,
                    "code": str(reply.status),
                }
            }
            return web.json_response(payload, status=reply.status, headers=reply.headers)
        if reply.kind == "invalid_json":
            return web.Response(status=200, text="{not json at all", content_type="application/json")
        if reply.kind == "missing_fields":
            return web.json_response({"id": "chatcmpl-broken", "object": "chat.completion"})
        if reply.kind != "ok":
            raise ValueError(f"unknown reply kind {reply.kind!r}")

        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else _estimate_tokens(request.body)
        completion_tokens = (
            reply.completion_tokens if reply.completion_tokens is not None else max(1, len(json.dumps(message)) // 4)
        )
        payload = {
            "id": f"chatcmpl-fake-{request.index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (request.body or {}).get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish,
                    **(_logprobs(completion_tokens) if (request.body or {}).get("logprobs") else {}),
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return web.json_response(payload, headers=reply.headers)


def _logprobs(tokens: int) -> dict[str, Any]:
    """OpenAI-style ``logprobs`` of ``tokens`` made-up tokens (as vLLM sends them with token ids)."""
    content = [
        {"token": f"token_id:{100 + i}", "logprob": -0.5 / (i + 1), "bytes": None, "top_logprobs": []}
        for i in range(tokens)
    ]
    return {"logprobs": {"content": content}}


@pytest.fixture
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """A started :class:`FakeLLMServer`, stopped after the test."""
    with FakeLLMServer() as server:
        yield server
