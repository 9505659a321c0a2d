"""The policy's torch core (no Ray): tokenizer, prompts equal to the datasets', sampler/learner agreement."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rollout.dataset import ParquetEpisodeWriter, read_steps
from rollout.episode import WorkItem, play_episode
from taugym import TauEnv
from taugym.agents import OraclePolicy
from train.policy import ChatPolicy, domain_tokenizer, tiny_model, tiny_policy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy() -> ChatPolicy:
    return tiny_policy(("retail", "airline"), max_action_tokens=24, max_prompt_tokens=512)


class RecordingOracle(OraclePolicy):
    """The oracle, keeping the chat it was shown at each step."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def act(self, observation, info):
        self.seen.append((list(info["messages"]), list(info["tools"])))
        return super().act(observation, info)


def test_the_domain_tokenizer_round_trips_any_text_and_is_cached(tmp_path):
    tokenizer = domain_tokenizer(("retail", "airline"))
    texts = [
        'Ünïcödé — “quotes”, emoji 🙂, tabs\tand\nnewlines, {"order_id": "#W2378156"}',
        '[answer] {"name": "get_order_details", "arguments": {"order_id": "#W1"}}',
        "  leading and trailing spaces  ",
        "",
    ]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    again = domain_tokenizer(("retail", "airline"))
    assert again.get_vocab() == tokenizer.get_vocab()
    system = TauEnv(task_category="retail", user_strategy="scripted").instruction
    assert len(tokenizer(system)["input_ids"]) < len(system) / 3  # a BPE of the domain's words, not bytes


def test_the_prompt_equals_the_datasets_prompt_column_token_for_token(policy, tmp_path):
    env = TauEnv(task_category="retail", user_strategy="scripted")
    agent = RecordingOracle()
    item = WorkItem("retail", "retail-001", 0, 7)
    result = asyncio.run(play_episode(env, agent, item, run_id="p", agent_name="oracle", agent_model=None))
    with ParquetEpisodeWriter(tmp_path, "p") as writer:
        writer.write(result["episode"], result["steps"])
    rows = read_steps(tmp_path, columns=["step_index", "prompt", "tools"]).to_pylist()
    rows.sort(key=lambda r: r["step_index"])
    assert len(rows) == len(agent.seen) > 3
    for row, (messages, tools) in zip(rows, agent.seen):
        live = policy.prompt_ids(messages, tools)
        assert policy.prompt_ids(row["prompt"], row["tools"]) == live
        assert live[0] == policy.tokenizer.bos_token_id and live[-1] == policy.tokenizer.convert_tokens_to_ids(
            "<|assistant|>"
        )
    # tool calls are written as the env's action protocol, with their arguments as JSON objects
    assert '[answer] {"name": "find_user_id_by_name_zip", "arguments": {"first_name": "Yusuf"' in policy.prompt_text(
        *agent.seen[-1]
    )


def test_an_episode_scored_at_once_equals_each_step_scored_alone(policy):
    """The learner scores an episode's steps in one pass over its last step, reusing the system turn's keys
    and values: the log-probs are those of every step scored alone over its whole prompt."""
    env = TauEnv(task_category="retail", user_strategy="scripted")
    agent = RecordingOracle()
    item = WorkItem("retail", "retail-011", 0, 7)
    asyncio.run(play_episode(env, agent, item, run_id="p", agent_name="oracle", agent_model=None))
    seen = agent.seen[:5]
    joint = ChatPolicy(policy.model, policy.tokenizer, max_action_tokens=64, max_prompt_tokens=16384)
    prompts = [joint.prompt_ids(messages, tools) for messages, tools in seen]
    actions = [
        joint.action_ids(messages, after[len(messages)], tools) for (messages, tools), (after, _) in zip(seen, seen[1:])
    ]
    assert len(actions) == 4 and prompts[1][: len(prompts[0]) + len(actions[0])] == prompts[0] + actions[0]
    alone = ChatPolicy(policy.model, policy.tokenizer, max_action_tokens=64, max_prompt_tokens=16384)
    prompts = prompts[:-1]
    with torch.no_grad():
        together = joint.score(prompts, actions)
        each = [alone.score([p], [a])[0] for p, a in zip(prompts, actions)]
    assert joint._system_turn(prompts[0]) and not alone._system_turn(prompts[0])  # the two paths differ
    for row, (scored, action) in enumerate(zip(each, actions)):
        assert torch.allclose(together[row, : len(action)], scored[: len(action)], atol=1e-4)


def test_a_demonstrated_turn_tokenizes_as_an_action_the_env_takes(policy):
    policy = ChatPolicy(policy.model, policy.tokenizer, max_action_tokens=64)
    prompt = [{"role": "system", "content": "policy"}, {"role": "user", "content": "hi"}]
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get_user_details", "arguments": '{"user_id": "u1"}'}}
        ],
    }
    ids = policy.action_ids(prompt, call)
    assert ids[-1] == policy.eos_id
    assert policy.decode_action(ids) == '[answer] {"name": "get_user_details", "arguments": {"user_id": "u1"}}'
    assert (
        policy.decode_action(policy.action_ids(prompt, {"role": "assistant", "content": "Hello"})) == "[action] Hello"
    )
    assert policy.decode_action(policy.action_ids(prompt, {"role": "assistant", "content": "[finish]"})) == "[finish]"
    cut = ChatPolicy(policy.model, policy.tokenizer, max_action_tokens=4).action_ids(prompt, call)
    assert len(cut) == 4 and cut[-1] == policy.eos_id  # a longer turn is cut, still ending the turn


def test_sampler_and_learner_log_probs_agree(policy):
    env = TauEnv(task_category="retail", user_strategy="scripted")
    _, info = env.reset(seed=0, options={"task_id": "retail-001"})
    first = policy.clip_prompt(policy.prompt_ids(info["messages"], info["tools"]))
    _, _, _, _, info = env.step("[action] Could you tell me your name and zip code?")
    second = policy.clip_prompt(policy.prompt_ids(info["messages"], info["tools"]))
    policy.forget_prefix()
    prompts, actions, sampled = [], [], []
    for seed, prompt in enumerate([first, second, first, second]):  # the second and later reuse the prefix's cache
        ids, logps = policy.generate(prompt, temperature=1.0, generator=torch.Generator().manual_seed(seed))
        prompts.append(prompt)
        actions.append(ids)
        sampled.append(logps)
    ids, logps = policy.generate(second, temperature=0.0)
    prompts.append(second)
    actions.append(ids)
    sampled.append(logps)
    scored = policy.score(prompts, actions, temperature=1.0)
    for row, (ids, logps) in enumerate(zip(actions, sampled)):
        assert len(ids) > 0 and all(t not in (policy.pad_id, policy.tokenizer.bos_token_id) for t in ids)
        assert abs(float(scored[row, : len(ids)].sum().detach()) - sum(logps)) <= 1e-3
        assert torch.allclose(scored[row, : len(ids)], torch.tensor(logps), atol=1e-4)
    assert scored.requires_grad


def test_a_local_hugging_face_folder_loads_as_the_same_policy(policy, tmp_path):
    policy.save_pretrained(tmp_path / "hf")
    loaded = ChatPolicy.from_pretrained(tmp_path / "hf", max_action_tokens=24, max_prompt_tokens=512)
    prompt = policy.prompt_ids([{"role": "system", "content": "You help."}, {"role": "user", "content": "Hello"}])
    assert (
        loaded.prompt_ids([{"role": "system", "content": "You help."}, {"role": "user", "content": "Hello"}]) == prompt
    )
    ids, _ = policy.generate(prompt, temperature=0.0)
    assert loaded.generate(prompt, temperature=0.0)[0] == ids
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        ChatPolicy.from_pretrained(tmp_path / "missing")


def test_dropout_is_off_and_special_tokens_are_never_sampled():
    tokenizer = domain_tokenizer(("retail", "airline"))
    model = tiny_model(tokenizer)
    model.config.attention_dropout = 0.3
    model.train()
    policy = ChatPolicy(model, tokenizer, max_action_tokens=4)
    assert policy.model.config.attention_dropout == 0.0 and not policy.model.training
    banned = set(tokenizer.all_special_ids) - {tokenizer.eos_token_id}
    assert all(bool(policy.banned[t]) for t in banned) and not bool(policy.banned[tokenizer.eos_token_id])


def test_a_chat_models_reply_decodes_to_an_action_in_the_envs_protocol(policy):
    def decoded(text):
        return policy.decode_action(policy.tokenizer(text, add_special_tokens=False)["input_ids"] + [policy.eos_id])

    call = '{"name": "get_user_details", "arguments": {"user_id": "mia_garcia_4516"}}'
    assert decoded(f"[answer] {call}") == f"[answer] {call}"  # the protocol as it is
    assert decoded(f"<tool_call>\n{call}\n</tool_call>") == f"[answer] {call}"  # the Hermes layout
    assert decoded("Could you give me your zip code?") == "[action] Could you give me your zip code?"
    assert decoded("[finish]") == "[finish]"


def test_a_clipped_prompt_keeps_the_users_request_and_the_latest_turns(policy):
    env = TauEnv(task_category="retail", user_strategy="scripted")
    agent = RecordingOracle()
    item = WorkItem("retail", "retail-011", 0, 7)
    asyncio.run(play_episode(env, agent, item, run_id="p", agent_name="oracle", agent_model=None))
    messages, tools = agent.seen[-1]
    request = next(m["content"] for m in messages if m["role"] == "user")
    wide = ChatPolicy(policy.model, policy.tokenizer, max_prompt_tokens=16384)
    ids = wide.prompt_ids(messages, tools)
    system = wide._system_turn(ids)
    assert system and len(ids) > len(system) + 1024
    for budget, keeps_system in ((len(system) + 1024, True), (1024, False)):
        clipper = ChatPolicy(policy.model, policy.tokenizer, max_prompt_tokens=budget)
        clipper.prompt_ids(messages, tools)
        clipped = clipper.clip_prompt(ids)
        text = policy.tokenizer.decode(clipped)
        assert len(clipped) == budget and clipped[-64:] == ids[-64:]  # the most recent turns, up to the prompt's end
        assert request in text  # the user's request, from the conversation's opening
        assert (clipped[: len(system)] == system) is keeps_system
