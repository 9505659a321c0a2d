"""The LLM client against a real (fake) OpenAI-compatible HTTP server.

Each test states an outcome a TauGym user relies on: replies are parsed and
accounted, transient failures are retried (honouring Retry-After), hopeless
requests fail at once with a useful message and no leaked key, calls never
hang, rate limits hold across threads and event loops, and async calls
overlap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import threading
import time

import pytest

from taugym.llm import (
    ConcurrencyLimiter,
    LLMCallError,
    LLMClient,
    LLMResponse,
    LLMSettings,
    LLMUsage,
    TokenBucket,
    TokenBucketRateLimiter,
    estimate_tokens,
    reset_shared_rate_limiters,
    scrub_secrets,
    shared_rate_limiter,
)

try:
    from tests.fake_llm_server import (
        FakeLLMServer,
        Reply,
        fake_llm_server,
        random_failures,
    )
except ImportError:  # tests/ not importable as a package: pytest put it on sys.path
    from fake_llm_server import FakeLLMServer, Reply, fake_llm_server, random_failures  # type: ignore[no-redef]

__all__ = ["fake_llm_server"]  # the fixture, re-exported for pytest

API_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"
MESSAGES = [
    {"role": "system", "content": "You are a helpful airline agent."},
    {"role": "user", "content": "Please change my flight."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_user_details",
            "description": "Look up a user.",
            "parameters": {
                "type": "object",
                "properties": {"user_id": {"type": "string"}},
                "required": ["user_id"],
            },
        },
    }
]


def make_client(server: FakeLLMServer, **kwargs: object) -> LLMClient:
    params: dict[str, object] = {
        "provider": "openai",
        "base_url": server.base_url,
        "api_key": API_KEY,
        "timeout_s": 5.0,
        "deadline_s": 30.0,
        "max_attempts": 5,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    params.update(kwargs)
    settings = {k: params.pop(k) for k in list(params) if k in LLMSettings.__dataclass_fields__}
    return LLMClient(LLMSettings("fake-model", **settings), **params)  # type: ignore[arg-type]


def max_in_window(times: list[float], window_s: float) -> int:
    """Most events in any half-open window [t, t + window_s)."""
    times = sorted(times)
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= window_s:
            j += 1
        best = max(best, i - j + 1)
    return best


# ----------------------------------------------------------------------------
# Replies are parsed and accounted
# ----------------------------------------------------------------------------
def test_plain_reply_is_parsed_and_tokens_accounted(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.enqueue(Reply.ok("Sure, which booking?", prompt_tokens=42, completion_tokens=7))
    client = make_client(fake_llm_server, temperature=0.0)

    response = client.complete(MESSAGES, stop=["###STOP###"])

    assert response.content == "Sure, which booking?"
    assert response.tool_calls == []
    assert (response.prompt_tokens, response.completion_tokens) == (42, 7)
    assert response.raw_finish_reason == "stop"
    assert response.attempts == 1
    assert response.cost_usd == 0.0  # unknown model: no price, no exception
    (request,) = fake_llm_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.messages == MESSAGES
    assert request.body is not None
    assert request.body["model"] == "fake-model"
    assert request.body["stop"] == ["###STOP###"]  # user simulators rely on stop=
    assert request.body["temperature"] == 0.0  # client default sampling params are sent


def test_tool_call_reply_is_parsed(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.enqueue(Reply.tools(("get_user_details", {"user_id": "mia_li_3668"})))
    client = make_client(fake_llm_server)

    response = asyncio.run(client.acomplete(MESSAGES, tools=TOOLS))

    assert response.raw_finish_reason == "tool_calls"
    (call,) = response.tool_calls
    assert call["type"] == "function"
    assert call["id"]
    assert call["function"]["name"] == "get_user_details"
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == {"user_id": "mia_li_3668"}
    assert response.prompt_tokens > 0 and response.completion_tokens > 0
    assert fake_llm_server.requests[0].body["tools"] == TOOLS  # type: ignore[index]


def test_cost_is_accounted_for_priced_models(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.enqueue(Reply.ok("hi", prompt_tokens=1000, completion_tokens=500))
    client = LLMClient(
        LLMSettings("gpt-4o-mini", provider="openai", base_url=fake_llm_server.base_url), api_key=API_KEY
    )

    response = client.complete(MESSAGES)

    assert response.cost_usd > 0


def test_usage_sums_per_episode() -> None:
    episode = LLMUsage()
    episode.add(LLMResponse(content="a", prompt_tokens=10, completion_tokens=2, cost_usd=0.5, attempts=3))
    episode.add(LLMResponse(content="b", prompt_tokens=5, completion_tokens=1, cost_usd=0.25))
    episode.add(LLMCallError("boom", attempts=2).usage)
    assert episode.as_dict() == {
        "calls": 3,
        "retries": 3,
        "failures": 1,
        "prompt_tokens": 15,
        "completion_tokens": 3,
        "cost_usd": 0.75,
        "total_tokens": 18,
    }


# ----------------------------------------------------------------------------
# Transient failures are retried
# ----------------------------------------------------------------------------
def test_429_retry_after_is_honoured(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.enqueue(Reply.rate_limit(retry_after_s=1), Reply.ok("finally"))
    client = make_client(fake_llm_server)

    response = client.complete(MESSAGES)

    assert response.content == "finally"
    assert response.attempts == 2
    first, second = fake_llm_server.request_times()
    assert second - first >= 1.0  # backoff alone would be ~0.01 s


def test_retry_after_beyond_the_deadline_fails_now_instead_of_sleeping(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.enqueue(Reply.rate_limit(retry_after_s=60))
    client = make_client(fake_llm_server, deadline_s=2.0)

    start = time.monotonic()
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)

    assert time.monotonic() - start < 1.0
    assert info.value.status_code == 429 and info.value.retryable
    assert "deadline" in str(info.value)
    assert len(fake_llm_server.requests) == 1


def test_malformed_replies_are_retried(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.enqueue(
        Reply.invalid_json(),
        Reply.missing_fields(),
        Reply.server_error(503),
        Reply.ok("ok"),
    )
    client = make_client(fake_llm_server)

    response = asyncio.run(client.acomplete(MESSAGES))

    assert response.content == "ok"
    assert response.attempts == 4
    assert len(fake_llm_server.requests) == 4


def test_batch_survives_30_percent_transient_failures(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.set_handler(random_failures(0.3, seed=1234, kinds=("429", "500", "hang")))
    client = make_client(fake_llm_server, timeout_s=0.4, max_attempts=12)

    async def batch() -> list[LLMResponse]:
        return await asyncio.gather(*(client.acomplete(MESSAGES) for _ in range(40)))

    responses = asyncio.run(batch())

    assert [r.content for r in responses] == ["ok"] * 40
    retries = sum(r.attempts - 1 for r in responses)
    assert retries > 0
    # every request the server saw was a first attempt or a retry; under load an attempt can
    # time out before the server records it, so the server may see fewer than 40 + retries
    assert 40 < len(fake_llm_server.requests) <= 40 + retries


# ----------------------------------------------------------------------------
# Calls never hang; hopeless providers fail fast
# ----------------------------------------------------------------------------
def test_hung_connection_is_cut_at_the_timeout(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.set_handler(lambda request: Reply.hang())
    client = make_client(fake_llm_server, timeout_s=0.5, max_attempts=2)

    start = time.monotonic()
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)
    elapsed = time.monotonic() - start

    assert 0.9 <= elapsed < 3.0  # two attempts of ~0.5 s each, not a hang
    first, second = fake_llm_server.request_times()
    assert 0.45 <= second - first < 1.5  # the first request was cut at ~timeout_s
    err = info.value
    assert err.attempts == 2 and err.retryable
    assert "timeout" in str(err) and "2 attempt" in str(err)


def test_async_hung_connection_hits_the_deadline(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.set_handler(lambda request: Reply.hang())
    client = make_client(fake_llm_server, timeout_s=0.4, deadline_s=1.0, max_attempts=100)

    start = time.monotonic()
    with pytest.raises(LLMCallError) as info:
        asyncio.run(client.acomplete(MESSAGES))
    elapsed = time.monotonic() - start

    assert elapsed < 2.5
    assert "deadline" in str(info.value)
    assert 2 <= info.value.attempts <= 3


def test_always_failing_provider_raises_after_max_attempts(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.set_handler(lambda request: Reply.server_error(500))
    client = make_client(fake_llm_server, max_attempts=3)

    start = time.monotonic()
    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)

    assert time.monotonic() - start < 2.0
    err = info.value
    assert err.attempts == 3 and err.status_code == 500 and err.retryable
    assert "3 attempt" in str(err) and "max_attempts=3" in str(err)
    assert len(fake_llm_server.requests) == 3
    assert (err.usage.failures, err.usage.retries, err.usage.calls) == (1, 2, 1)


@pytest.mark.parametrize(
    ("status", "provider_message", "expected_hint"),
    [
        (401, f"Incorrect API key provided: {API_KEY}", "check the api_key"),
        (403, "Not allowed", "not allowed to use model"),
        (404, "The model `fake-model` does not exist", "not found"),
        (400, "Invalid 'messages[1].content'", "rejected the request as invalid"),
        (400, "This model's maximum context length is 8192 tokens", "context window"),
    ],
)
def test_hopeless_requests_fail_at_once_without_leaking_the_key(
    fake_llm_server: FakeLLMServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
    provider_message: str,
    expected_hint: str,
) -> None:
    fake_llm_server.set_handler(lambda request: Reply.error(status, provider_message))
    client = make_client(fake_llm_server)

    with caplog.at_level(logging.DEBUG), pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)

    assert len(fake_llm_server.requests) == 1  # not retried
    err = info.value
    assert err.attempts == 1 and err.status_code == status and not err.retryable
    assert expected_hint in str(err)
    assert "What to do" in str(err)
    for text in (str(err), repr(err), caplog.text, json.dumps(err.usage.as_dict())):
        assert API_KEY not in text
    assert err.__cause__ is None and err.__suppress_context__
    clone = pickle.loads(pickle.dumps(err))  # crosses process boundaries intact
    assert (str(clone), clone.attempts, clone.status_code) == (str(err), 1, status)


def test_missing_api_key_fails_at_once_naming_the_env_var(
    fake_llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = make_client(fake_llm_server, api_key=None)

    with pytest.raises(LLMCallError) as info:
        client.complete(MESSAGES)

    assert "OPENAI_API_KEY" in str(info.value)
    assert info.value.attempts == 1 and not info.value.retryable


def test_scrub_secrets() -> None:
    text = (
        f"bad key {API_KEY}; Authorization: Bearer abc.def-ghi123; api_key='xyz98765'"
        " sk-other-1234567 https://bob:hunter2pass@proxy.example/v1?key=AIzaKey42&x=1"
    )
    scrubbed = scrub_secrets(text, [API_KEY])
    assert "https://***@proxy.example/v1?key=***&x=1" in scrubbed  # still readable
    secrets = (
        API_KEY,
        "abc.def-ghi123",
        "xyz98765",
        "sk-other-1234567",
        "hunter2pass",
        "AIzaKey42",
    )
    for secret in secrets:
        assert secret not in scrubbed


def test_client_repr_and_pickle_hide_nothing_secret_and_survive() -> None:
    client = LLMClient(LLMSettings("fake-model", provider="openai"), api_key=API_KEY, temperature=0.2)
    assert API_KEY not in repr(client)
    clone = pickle.loads(pickle.dumps(client))
    assert clone.default_params == {"temperature": 0.2}


# ----------------------------------------------------------------------------
# Rate limits hold; calls overlap
# ----------------------------------------------------------------------------
def test_rpm_limit_holds_for_concurrent_async_callers(
    fake_llm_server: FakeLLMServer,
) -> None:
    rpm, n = 600.0, 25  # 10 requests/s
    limiter = TokenBucketRateLimiter(requests_per_minute=rpm)
    client = make_client(fake_llm_server, rate_limiter=limiter)

    async def burst() -> None:
        await asyncio.gather(*(client.acomplete(MESSAGES) for _ in range(n)))

    start = time.monotonic()
    asyncio.run(burst())
    elapsed = time.monotonic() - start

    times = fake_llm_server.request_times()
    assert len(times) == n
    assert max_in_window(times, 1.0) <= rpm / 60 + 1  # the limit plus a burst of one
    assert elapsed >= (n - 1) / (rpm / 60) * 0.95  # it really was throttled


def test_rpm_limit_holds_across_threads_and_event_loops(
    fake_llm_server: FakeLLMServer,
) -> None:
    reset_shared_rate_limiters()
    rpm = 600.0
    key = f"openai/fake-model@{fake_llm_server.base_url}"
    # Two "envs" built separately share one limiter through the registry.
    client_a = make_client(fake_llm_server, rate_limiter=shared_rate_limiter(key, requests_per_minute=rpm))
    client_b = make_client(fake_llm_server, rate_limiter=shared_rate_limiter(key, requests_per_minute=rpm))
    assert client_a.rate_limiter is client_b.rate_limiter
    errors: list[BaseException] = []

    def sync_worker() -> None:
        try:
            for _ in range(3):
                client_a.complete(MESSAGES)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def loop_worker() -> None:
        async def run() -> None:
            await asyncio.gather(*(client_b.acomplete(MESSAGES) for _ in range(4)))

        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=sync_worker) for _ in range(4)]
    threads += [threading.Thread(target=loop_worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    times = fake_llm_server.request_times()
    assert len(times) == 4 * 3 + 2 * 4
    assert max_in_window(times, 1.0) <= rpm / 60 + 1
    reset_shared_rate_limiters()


def test_async_calls_overlap(fake_llm_server: FakeLLMServer) -> None:
    n, latency = 20, 0.5
    fake_llm_server.set_handler(lambda request: Reply.ok("ok", delay_s=latency))
    client = make_client(fake_llm_server)

    async def batch() -> None:
        await asyncio.gather(*(client.acomplete(MESSAGES) for _ in range(n)))

    start = time.monotonic()
    asyncio.run(batch())
    elapsed = time.monotonic() - start

    assert elapsed < n * latency / 2  # overlap, not a benchmark: serial would be 10 s
    assert fake_llm_server.max_in_flight > 1


def test_max_concurrency_caps_requests_in_flight(
    fake_llm_server: FakeLLMServer,
) -> None:
    fake_llm_server.set_handler(lambda request: Reply.ok("ok", delay_s=0.2))
    client = make_client(fake_llm_server, rate_limiter=TokenBucketRateLimiter(max_concurrency=3))

    async def batch() -> None:
        await asyncio.gather(*(client.acomplete(MESSAGES) for _ in range(9)))

    start = time.monotonic()
    asyncio.run(batch())

    assert fake_llm_server.max_in_flight == 3
    assert time.monotonic() - start >= 3 * 0.2 * 0.9


# ----------------------------------------------------------------------------
# Limiter building blocks (no server)
# ----------------------------------------------------------------------------
def test_token_bucket_spaces_requests_and_serves_oversized_ones() -> None:
    def take(bucket: TokenBucket, amount: float, now: float) -> float:
        at = bucket.earliest(amount, now)
        bucket.commit(amount, at)
        return at - now

    bucket = TokenBucket(rate_per_s=10.0, capacity=1.0, now=0.0)
    waits = [take(bucket, 1.0, now=0.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # Released times never exceed capacity + rate * W in any window.
    releases = [w for w in waits]
    assert max_in_window(releases, 0.25) <= 1 + 10.0 * 0.25

    tokens = TokenBucket(rate_per_s=100.0, capacity=50.0, now=0.0)
    assert take(tokens, 30.0, now=0.0) == 0.0
    assert take(tokens, 200.0, now=0.0) == pytest.approx((30 + 200 - 50) / 100.0)  # larger than capacity: waits
    tokens.give_back(10_000.0, now=10.0)
    assert tokens.earliest(50.0, now=10.0) == 10.0  # full again, no more


def test_tpm_precharge_is_corrected_by_actual_usage() -> None:
    limiter = TokenBucketRateLimiter(tokens_per_minute=6000.0, burst_tokens=100.0)
    assert limiter.acquire(100) == 0.0
    limiter.record_usage(estimated_tokens=100, actual_tokens=300)  # 200 more than charged
    assert limiter.reserve(0) == 0.0  # no tokens asked, no wait
    # 300 tokens of debt at 100 tokens/s (uncorrected it would be 1 s); the clock moves on a little meanwhile
    assert limiter.reserve(100) == pytest.approx(3.0, abs=0.5)
    assert estimate_tokens(MESSAGES, TOOLS) > estimate_tokens(MESSAGES)


def test_cancelled_async_waiter_does_not_leak_a_concurrency_slot() -> None:
    limiter = ConcurrencyLimiter(1)

    async def scenario() -> None:
        await limiter.aacquire()
        waiter = asyncio.ensure_future(limiter.aacquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limiter.release()
        await asyncio.wait_for(limiter.aacquire(), timeout=1.0)  # the slot is free again
        limiter.release()

    asyncio.run(scenario())


def test_the_llm_layer_imports_nothing_else_of_taugym() -> None:
    import subprocess
    import sys

    code = (
        "import sys, taugym.llm; "
        "print(sorted(m for m in sys.modules if m.startswith('taugym.') and not m.startswith('taugym.llm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
