"""The LLM user and the LLM agent in TauEnv, over real HTTP to a fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from taugym import TauEnv
from taugym.agents.llm import LLMAgent
from taugym.llm import TokenBucketRateLimiter, reset_shared_rate_limiters

try:
    from fake_llm_server import FakeLLMServer, RecordedRequest, Reply, fake_llm_server, random_failures
except ImportError:  # pragma: no cover
    from tests.fake_llm_server import FakeLLMServer, RecordedRequest, Reply, fake_llm_server, random_failures  # type: ignore

__all__ = ["fake_llm_server"]

FAKE_KEY = "sk-test-TAUGYM-not-a-real-key-0123456789"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    reset_shared_rate_limiters()
    yield
    reset_shared_rate_limiters()


def scripted_conversation(request: RecordedRequest, delay_s: float = 0.0) -> Reply:
    """A whole conversation: the user asks, the agent looks the order up and answers, the user ends."""
    messages = request.messages
    if "<scenario>" in (messages[0].get("content") or ""):  # the user simulator
        own_turns = sum(1 for m in messages if m["role"] == "assistant")
        if own_turns >= 2:
            return Reply.ok("Thanks, that's all I needed. ###STOP###", delay_s=delay_s)
        return Reply.ok("I want to check my order #W2378156.", delay_s=delay_s)
    if messages[-1]["role"] == "user" and not any(m["role"] == "tool" for m in messages):
        return Reply(
            kind="ok",
            text=None,
            delay_s=delay_s,
            tool_calls=[
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": "#W2378156"})},
                }
            ],
        )
    return Reply.ok("<think>order is delivered</think>Your order #W2378156 has been delivered.", delay_s=delay_s)


def make_env(server: FakeLLMServer, **options) -> TauEnv:
    config = dict(
        user_strategy="llm",
        user_model="fake-user",
        user_provider="openai",
        user_base_url=server.base_url,
        data_source="retail-000",
        llm_timeout_s=2.0,
        llm_max_attempts=6,
        llm_backoff_initial_s=0.05,
        llm_backoff_max_s=0.2,
    )
    config.update(options)
    return TauEnv(config)


def make_agent(server: FakeLLMServer, **options) -> LLMAgent:
    settings = dict(
        model="fake-agent",
        provider="openai",
        base_url=server.base_url,
        timeout_s=2.0,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    settings.update(options)
    return LLMAgent(**settings)


async def play(env: TauEnv, agent: LLMAgent, seed: int):
    observation, info = await env.reset_async(seed=seed)
    while True:
        action = await agent.aact(observation, info)
        observation, reward, terminated, truncated, info = await env.step_async(action)
        if terminated or truncated:
            return reward, info, agent.usage()


def test_llm_user_gets_tau2_guidelines_and_scenario_and_ends_the_conversation(fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    env = make_env(fake_llm_server)
    reward, info, agent_usage = asyncio.run(play(env, make_agent(fake_llm_server), seed=1))
    assert info["termination"] == "user" and "error" not in info
    user_requests = [r for r in fake_llm_server.requests if "<scenario>" in r.messages[0]["content"]]
    system = user_requests[0].messages[0]["content"]
    assert env.domain.user_guidelines.strip()[:200] in system
    assert env.domain.tasks[0].reason_for_call[:80] in system
    assert user_requests[0].messages[1] == {"role": "user", "content": "Hi! How can I help you today?"}
    # the agent's reasoning never reaches the user; roles are flipped for the user model
    last = user_requests[-1].messages
    assert last[-1]["role"] == "user" and last[-1]["content"] == "Your order #W2378156 has been delivered."
    assert all("<think>" not in (m.get("content") or "") for r in user_requests for m in r.messages)
    # the agent used native tool calling and saw the benchmark's policy and tools
    agent_request = next(r for r in fake_llm_server.requests if r.body.get("tools"))
    assert env.domain.policy in agent_request.messages[0]["content"]
    domain_tools = {schema["function"]["name"] for schema in env.domain.tool_schemas}
    assert {t["function"]["name"] for t in agent_request.body["tools"]} == domain_tools
    assert info["llm_usage"]["calls"] == 3 and agent_usage["calls"] == 3


def test_batch_completes_with_30_percent_failures_and_reports_retries(fake_llm_server):
    fake_llm_server.set_handler(random_failures(0.3, seed=4, kinds=("429", "500", "hang"), ok=scripted_conversation))
    envs = [make_env(fake_llm_server, llm_timeout_s=0.5, llm_max_attempts=10) for _ in range(6)]

    async def batch():
        return await asyncio.gather(
            *(
                play(env, make_agent(fake_llm_server, timeout_s=0.5, max_attempts=10), seed=i)
                for i, env in enumerate(envs)
            )
        )

    results = asyncio.run(batch())
    assert len(results) == 6
    assert all(info["termination"] == "user" and "error" not in info for _, info, _ in results)
    retries = sum(info["llm_usage"]["retries"] + usage["retries"] for _, info, usage in results)
    failures_seen = len(fake_llm_server.requests) - 6 * 6  # requests beyond one per conversation turn
    assert 0 < failures_seen <= retries  # an attempt cut by the timeout may never reach the server


def test_request_rate_never_exceeds_the_configured_limit(fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    limits = dict(llm_requests_per_minute=600)  # 10 per second, shared by every env (and every agent)
    envs = [make_env(fake_llm_server, **limits) for _ in range(5)]

    async def batch():
        return await asyncio.gather(
            *(play(env, make_agent(fake_llm_server, requests_per_minute=600), seed=i) for i, env in enumerate(envs))
        )

    asyncio.run(batch())
    assert len(fake_llm_server.requests) == 30
    for model in ("fake-user", "fake-agent"):  # limits are per model and endpoint, as providers count them
        times = [r.t for r in fake_llm_server.requests if r.body["model"] == model]
        assert len(times) == 15
        busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        assert busiest <= 11  # 10 per second plus the one-request burst


def test_concurrent_episodes_overlap_their_llm_waits(fake_llm_server):
    latency = 0.3
    fake_llm_server.set_handler(lambda request: scripted_conversation(request, delay_s=latency))
    count = 8
    envs = [make_env(fake_llm_server) for _ in range(count)]

    async def batch():
        return await asyncio.gather(*(play(env, make_agent(fake_llm_server), seed=i) for i, env in enumerate(envs)))

    started = time.monotonic()
    results = asyncio.run(batch())
    elapsed = time.monotonic() - started
    serial = count * 6 * latency  # six calls per episode, one after another
    assert all(info["termination"] == "user" for _, info, _ in results)
    assert elapsed < serial / 3, (elapsed, serial)
    assert fake_llm_server.max_in_flight >= count // 2


def test_user_failing_for_good_ends_the_episode_as_an_error_not_a_zero(fake_llm_server):
    replies = iter([Reply.ok("I want to check my order #W2378156.")])
    fake_llm_server.set_handler(lambda request: next(replies, Reply.server_error(500)))
    env = make_env(fake_llm_server, llm_max_attempts=3)
    env.reset(seed=0)
    started = time.monotonic()
    _, reward, terminated, truncated, info = env.step("[action] Could you give me your order id?")
    assert time.monotonic() - started < 5
    assert terminated and not truncated
    assert info["termination"] == "error" and info["evaluation"] is None
    assert info["error"]["type"] == "LLMCallError" and "3 attempt" in info["error"]["message"]
    assert info["llm_usage"]["failures"] >= 1
    assert FAKE_KEY not in json.dumps(info, default=str)


def test_hung_provider_is_cut_at_the_timeout(fake_llm_server):
    fake_llm_server.set_handler(lambda request: Reply.hang())
    env = make_env(fake_llm_server, llm_timeout_s=0.5, llm_max_attempts=2)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="could not start"):
        env.reset(seed=0)
    assert time.monotonic() - started < 4


def test_text_protocol_agent_for_models_without_tool_calling(fake_llm_server):
    def handler(request: RecordedRequest) -> Reply:
        if "<scenario>" in request.messages[0]["content"]:
            return scripted_conversation(request)
        assert "tools" not in (request.body or {})
        asked = sum(1 for m in request.messages if m["role"] == "assistant")
        return Reply.ok(['[answer] get_order_details {"order_id": "#W2378156"}', "[finish]"][min(asked, 1)])

    fake_llm_server.set_handler(handler)
    env = make_env(fake_llm_server)
    reward, info, _ = asyncio.run(play(env, make_agent(fake_llm_server, native_tools=False), seed=0))
    assert info["termination"] == "agent"
    assert any(m.get("tool_calls") for m in info["messages"])


def test_default_config_is_the_seeds_llm_user_on_gpt4o():
    from taugym.users.llm import LLMUser

    env = TauEnv()  # building it calls no model; reset would, with OPENAI_API_KEY
    assert isinstance(env.user, LLMUser)
    assert (env.user.client.settings.model, env.user.client.settings.provider) == ("gpt-4o", "openai")
    assert env.user.client.default_params == {"temperature": 0.0}


def test_llm_user_and_agent_settings_load_from_yaml(tmp_path, fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    path = tmp_path / "env.yaml"
    path.write_text(
        f"user_strategy: llm\nuser_model: fake-user\nuser_provider: openai\nuser_base_url: {fake_llm_server.base_url}\n"
        "llm_requests_per_minute: 1200\nllm_max_attempts: 3\ndata_source: retail-000\n"
    )
    env = TauEnv(str(path))
    assert env.user.client.settings.max_attempts == 3
    assert isinstance(env.user.client.rate_limiter, TokenBucketRateLimiter)  # the limits are applied
    observation, _ = env.reset(seed=0)
    assert observation["feedback"] == "User: I want to check my order #W2378156."


def _telecom_user(request: RecordedRequest) -> Reply:
    """The telecom user: checks the status bar on its phone, then reports what it saw."""
    messages = request.messages
    if "<scenario>" not in (messages[0].get("content") or ""):
        return Reply.ok("unused")
    if messages[-1]["role"] == "tool":
        return Reply.ok("My status bar says: " + messages[-1]["content"][:60])
    if sum(1 for m in messages if m["role"] == "user") >= 2:
        return Reply.tools(("check_status_bar", {}))
    return Reply.ok("My phone has no internet.")


def test_telecom_llm_user_calls_its_device_tools_and_only_it_sees_the_results(fake_llm_server):
    from tau2.agent.base import is_valid_agent_history_message
    from tau2.user.user_simulator import get_global_user_sim_guidelines

    fake_llm_server.set_handler(_telecom_user)
    env = make_env(fake_llm_server, task_category="telecom", data_source="telecom-000")
    observation, info = env.reset()
    assert observation["feedback"] == "User: My phone has no internet."
    observation, reward, terminated, truncated, info = env.step("[action] What does your status bar show?")
    assert observation["feedback"].startswith("User: My status bar says: ")
    user_requests = [r for r in fake_llm_server.requests if "<scenario>" in r.messages[0]["content"]]
    # tau2's user gets the tools guidelines and its device tools
    assert get_global_user_sim_guidelines(use_tools=True).strip()[:300] in user_requests[0].messages[0]["content"]
    device_tools = {t["function"]["name"] for t in user_requests[0].body["tools"]}
    assert "check_status_bar" in device_tools and not device_tools & {
        s["function"]["name"] for s in env.domain.tool_schemas
    }
    # the call ran on the user's device; its result went back to the user model only
    result = user_requests[-1].messages[-1]
    assert result["role"] == "tool"
    assert not [m for m in info["messages"] if m["role"] == "tool" or m.get("tool_calls")]
    expected = env.session.env.user_tools.check_status_bar()
    assert result["content"] == expected
    user_calls = [m for m in env.session.messages if m.role == "user" and m.tool_calls]
    assert [c.requestor for m in user_calls for c in m.tool_calls] == ["user"]
    # the agent's messages are what tau2's agent sees of the same exchange
    tau2_view = [(m.role, m.content) for m in env.session.messages if is_valid_agent_history_message(m)]
    assert [(m["role"], m["content"]) for m in info["messages"][1:]] == tau2_view


def test_llm_user_sees_a_tasks_initial_history(fake_llm_server):
    fake_llm_server.set_handler(lambda request: Reply.ok("Please also mark it as important."))
    env = make_env(fake_llm_server, task_category="mock", data_source="mock-004")
    observation, info = env.reset()
    user_request = fake_llm_server.requests[0].messages
    assert [m["content"] for m in user_request[1:]] == [
        "I need to create a task for the project review meeting.",  # its own turn: flipped to assistant
        "I've created a task titled 'Project Review' for you. The task has been created with ID task_2 "
        "and is currently in pending status.",
    ]
    assert [m["role"] for m in user_request[1:]] == ["assistant", "user"]
    assert observation["feedback"] == "User: Please also mark it as important."
    assert any(m.get("tool_calls") for m in info["messages"])  # the agent sees the history's tool call
