"""A conversation that outgrows a model's context ends the episode with the termination ``context_length``.

``transformers serve`` (and other local servers) take a prompt longer than the
model's context without a word; with ``context_window`` set, the client counts
each prompt before sending it and refuses one that does not fit. The env (for
the user model) and the rollout (for the agent's model) end the episode there,
truncated and scored as it stands, not as a provider error. Over real HTTP to
the fake server.
"""

from __future__ import annotations

import asyncio

import pytest
from test_llm_env import FAKE_KEY, make_agent, make_env

from rollout.episode import WorkItem, play_episode
from taugym.llm import LLMCallError, LLMClient, LLMSettings, reset_shared_rate_limiters

try:
    from fake_llm_server import Reply, fake_llm_server
except ImportError:  # pragma: no cover
    from tests.fake_llm_server import Reply, fake_llm_server  # type: ignore

__all__ = ["fake_llm_server"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    reset_shared_rate_limiters()
    yield
    reset_shared_rate_limiters()


def test_a_prompt_over_the_context_window_is_not_sent(fake_llm_server):
    client = LLMClient(
        LLMSettings(model="fake", provider="openai", base_url=fake_llm_server.base_url, context_window=50)
    )
    with pytest.raises(LLMCallError) as caught:
        client.complete([{"role": "user", "content": "word " * 200}], max_tokens=10)
    assert caught.value.context_overflow
    assert "context_window of 50 tokens" in str(caught.value)
    assert fake_llm_server.requests == []
    # a prompt that fits goes through
    assert client.complete([{"role": "user", "content": "hi"}], max_tokens=10).content == "ok"


def test_max_tokens_counts_towards_the_context_window(fake_llm_server):
    client = LLMClient(
        LLMSettings(model="fake", provider="openai", base_url=fake_llm_server.base_url, context_window=50)
    )
    with pytest.raises(LLMCallError) as caught:
        client.complete([{"role": "user", "content": "hi"}], max_tokens=100)
    assert caught.value.context_overflow


def test_a_user_model_out_of_context_ends_the_episode_as_context_length(fake_llm_server):
    fake_llm_server.set_handler(lambda request: Reply.ok("I want to return my order."))
    env = make_env(fake_llm_server, llm_context_window=3000)  # the user's first prompt fits, a long message does not
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step("[action] " + "Here are the details. " * 1200)
    assert truncated and not terminated
    assert info["termination"] == "context_length"
    assert "error" not in info
    assert info["evaluation"] is not None  # scored as it stands, like max_steps
    assert "no longer fits" in observation["feedback"]
    assert len(fake_llm_server.requests) == 1  # the reset's user turn; the long one was never sent


def test_an_agent_model_out_of_context_ends_the_rollout_episode_as_context_length(fake_llm_server):
    fake_llm_server.set_handler(lambda request: Reply.ok("I want to return my order."))
    env = make_env(fake_llm_server)
    agent = make_agent(fake_llm_server, context_window=1000)  # the retail policy and tools alone are more
    item = WorkItem(domain="retail", task_id="retail-000", trial=0, seed=1)
    result = asyncio.run(play_episode(env, agent, item, run_id="run", agent_name="llm", agent_model="fake-agent"))
    episode = result["episode"]
    assert episode["termination"] == "context_length"
    assert not episode["error"] and episode["error_cause"] is None
    assert episode["truncated"] and not episode["terminated"]
    assert episode["reward"] is not None
    assert episode["llm_calls"] >= 2  # the user's turn and the agent's call that was not sent
    assert all("<scenario>" in (r.messages[0].get("content") or "") for r in fake_llm_server.requests)


def test_truncate_refuses_a_termination_the_env_gives_itself(fake_llm_server):
    env = make_env(fake_llm_server)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="context_length"):
        env.truncate("error")
