"""A real model behind a real OpenAI-compatible server: SmolLM2 served by ``transformers serve`` on 127.0.0.1.

Slow (minutes: a 2-core CPU takes seconds per turn), so marked ``slow`` and run
by ``make test-slow``, not ``make test``. Two tasks, few steps. What a user
relies on: the rollout job plays the LLM user and the LLM agent against the
server to the end, the rows hold the model's own replies and the token counts
the server reported, both the native tool-calling and the text protocols go
through, and a server that dies mid-run leaves error rows that ``--resume
--retry-errors`` completes once a server is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rollout.dataset import read_episodes, read_steps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from local_llm_server import LocalLLMServer  # noqa: E402

pytestmark = pytest.mark.slow

TASKS = ["retail-000", "airline-000"]
CONFIG = ROOT / "configs" / "rollout" / "local-llm.yaml"


@pytest.fixture(scope="module")
def model_folder() -> str:
    from train.smollm2 import prepare_smollm2

    return str(prepare_smollm2())


@pytest.fixture(scope="module")
def server(model_folder):
    with LocalLLMServer(model_folder) as running:
        yield running


def rollout_command(out: Path, base_url: str, model: str, *overrides: str, resume: bool = False) -> list[str]:
    """``python -m rollout`` on the local-LLM config, two tasks, few steps, against ``base_url``."""
    command = [sys.executable, "-m", "rollout", "--config", str(CONFIG), "--out", str(out), "--no-progress"]
    if resume:
        command += ["--resume", "--retry-errors"]
    return command + [
        f"tasks=[{', '.join(TASKS)}]",
        f"agent.base_url={base_url}",
        f"agent.model={model}",
        f"agent.tokenizer={model}",
        f"env.user_base_url={base_url}",
        f"env.user_model={model}",
        f"env.llm_tokenizer={model}",
        "env.max_steps=3",
        *overrides,
    ]


ENVIRONMENT = {**os.environ, "OPENAI_API_KEY": "local-server", "OMP_NUM_THREADS": "1"}


def rollout(out: Path, base_url: str, model: str, *overrides: str, resume: bool = False) -> subprocess.CompletedProcess:
    command = rollout_command(out, base_url, model, *overrides, resume=resume)
    return subprocess.run(command, cwd=ROOT, env=ENVIRONMENT, capture_output=True, text=True, timeout=1200)


#: How the env answers an action: a tool's result, the user's reply, a refusal with a hint, or the end.
ENV_ANSWERS = ("Tool ", "User: ", "Error: ", "The conversation ")


def model_turns(episode: dict) -> list[str]:
    """The texts the model wrote in an episode: the agent's messages and the user's (the user is the model too)."""
    return [
        m["content"]
        for m in episode["messages"]
        if m["role"] in ("assistant", "user") and m.get("content") and m["content"] != "[finish]"
    ]


def check_real_episodes(out: Path, model: str) -> list[dict]:
    episodes = read_episodes(out).to_pylist()
    assert sorted(e["task_id"] for e in episodes) == sorted(TASKS)
    for episode in episodes:
        assert not episode["error"], episode["error_cause"]
        assert episode["termination"] in ("agent", "user", "max_steps", "max_errors", "context_length")
        assert episode["agent_model"] == model
        # the server's counts: a retail or airline prompt alone is thousands of tokens, each reply at least one
        assert episode["llm_calls"] >= 2
        assert episode["prompt_tokens"] > 1000 * episode["llm_calls"] // 2
        assert episode["completion_tokens"] >= episode["llm_calls"]
        assert episode["cost_usd"] == 0.0
        assert model_turns(episode), "the episode holds no text written by the model"
    return episodes


def test_native_tool_calling_rollout_holds_the_models_replies(server, tmp_path):
    result = rollout(tmp_path, server.base_url, server.model, "agent.native_tools=true")
    assert result.returncode == 0, result.stderr[-3000:]
    episodes = check_real_episodes(tmp_path, server.model)
    steps = read_steps(tmp_path).to_pylist()
    assert len(steps) == sum(e["num_steps"] for e in episodes)
    for step in steps:
        # each action is the model's reply as the env took it (a tool call, or its text as a message to the user),
        # and the env answered it within the protocol
        assert step["completion"][0]["role"] == "assistant"
        assert step["next_observation"].startswith(ENV_ANSWERS), step["next_observation"][:200]
    # the model wrote what the conversations hold, not a canned line
    texts = [t for e in episodes for t in model_turns(e)]
    assert len(set(texts)) >= 2


def test_text_protocol_rollout_goes_through(server, tmp_path):
    result = rollout(tmp_path, server.base_url, server.model, "agent.native_tools=false")
    assert result.returncode == 0, result.stderr[-3000:]
    check_real_episodes(tmp_path, server.model)
    steps = read_steps(tmp_path).to_pylist()
    assert steps
    for step in steps:
        # the model's reply is the action, verbatim; an action the protocol cannot parse is refused with a hint
        # and the episode goes on
        assert step["next_observation"].startswith(ENV_ANSWERS), step["next_observation"][:200]
        if not step["action"].lstrip().startswith("["):
            assert step["next_observation"].startswith("Error:")


def test_server_killed_mid_run_becomes_error_rows_that_retry_errors_completes(model_folder, tmp_path):
    fast_failure = ["env.llm_max_attempts=1", "agent.max_attempts=1"]  # a refused connection fails the call at once
    with LocalLLMServer(model_folder) as server:
        command = rollout_command(tmp_path, server.base_url, server.model, *fast_failure)
        runner = subprocess.Popen(
            command, cwd=ROOT, env=ENVIRONMENT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _wait_for_first_completion(server, timeout_s=600)
        server.kill()
        _, stderr = runner.communicate(timeout=900)
    episodes = read_episodes(tmp_path).to_pylist()
    assert len(episodes) == len(TASKS), stderr[-3000:]  # every episode recorded, none dropped
    errors = [e for e in episodes if e["error"]]
    assert errors, "killing the server mid-run left no error row"
    assert all(e["termination"] == "error" and e["error_cause"] for e in errors)

    with LocalLLMServer(model_folder) as restarted:  # a new server (a new port) completes the run
        result = rollout(tmp_path, restarted.base_url, restarted.model, resume=True)
    assert result.returncode == 0, result.stderr[-3000:]
    check_real_episodes(tmp_path, restarted.model)


def _wait_for_first_completion(server: LocalLLMServer, timeout_s: float) -> None:
    """Until the server has answered a chat completion (its access log says so): the run is under way."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if '"POST /v1/chat/completions HTTP/1.1" 200' in server.log_path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the server answered no chat completion in {timeout_s}s; its log:\n{server.log_tail()}")


def test_smollm2_folder_is_prepared_once_and_loads_as_a_plain_llama_model(model_folder):
    from transformers import AutoConfig, AutoTokenizer

    from train.smollm2 import prepare_smollm2

    weights = Path(model_folder, "model.safetensors")
    written = weights.stat().st_mtime_ns
    assert str(prepare_smollm2()) == model_folder  # found complete: nothing written again
    assert weights.stat().st_mtime_ns == written
    config = AutoConfig.from_pretrained(model_folder)
    assert config.architectures == ["LlamaForCausalLM"]
    assert getattr(config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    call = {"id": "c1", "type": "function", "function": {"name": "find_user", "arguments": '{"zip": "10001"}'}}
    rendered = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "policy"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "user_1"},
        ],
        tools=[{"type": "function", "function": {"name": "find_user", "parameters": {"type": "object"}}}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert '<tool_call>\n{"name": "find_user", "arguments": {"zip": "10001"}}\n</tool_call>' in rendered
    assert "<tool_response>\nuser_1\n</tool_response>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
