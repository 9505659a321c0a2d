"""The datasets train with no glue: what a user of TRL, RLlib and Ray Data relies on.

Episodes load with ``datasets.load_dataset("parquet", ...)`` as TRL's
conversational format with tool-call arguments as dicts; every tool-capable
chat template TRL ships renders them (arguments as JSON objects, never as a
JSON string in a string); TRL's ``SFTTrainer`` trains on them as loaded; step
rows are a prompt-completion dataset; preference pairs come from repeated
trials; the job writes a dataset card. Nothing is downloaded: the tokenizer
and the model are built in code.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer

from rollout.dataset import ParquetEpisodeWriter, read_episodes, read_steps
from rollout.training_data import load_preferences, load_prompt_completion, load_sft

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# a few tasks of each default domain: both tool-call shapes, identification, choices, a transfer
SAMPLE_TASKS = {"retail": ["retail-000", "retail-001", "retail-005"], "airline": ["airline-000", "airline-001"]}


def play_sample(out: Path, tasks: dict[str, list[str]] = SAMPLE_TASKS, trials: int = 1) -> None:
    """Play the oracle on ``tasks`` through the rollout's own episode code and write them to ``out``."""
    from rollout.episode import WorkItem, play_episode
    from taugym import TauEnv
    from taugym.agents import OraclePolicy

    with ParquetEpisodeWriter(out, "sample") as writer:
        for domain, task_ids in tasks.items():
            env = TauEnv(task_category=domain, user_strategy="scripted")
            for task_id in task_ids:
                for trial in range(trials):
                    item = WorkItem(domain, task_id, trial, 1000 + trial)
                    result = asyncio.run(
                        play_episode(env, OraclePolicy(), item, run_id="sample", agent_name="oracle", agent_model=None)
                    )
                    writer.write(result["episode"], result["steps"])


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    play_sample(out)
    return out


def load_parquet(folder: Path, cache: Path):
    import datasets

    files = sorted(str(p) for p in folder.rglob("*.parquet"))
    return datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(cache))


# ------------------------------------------------------------- chat templates
def tool_capable_trl_templates() -> dict[str, str]:
    """TRL's shipped chat templates (``trl/chat_templates/*.jinja``) that render a ``tools`` list."""
    import trl

    folder = Path(trl.__file__).parent / "chat_templates"
    templates = {p.stem: p.read_text() for p in sorted(folder.glob("*.jinja"))}
    return {name: text for name, text in templates.items() if "tools" in text and "tool_calls" in text}


def code_tokenizer(chat_template: str | None = None):
    """A word-level tokenizer built in code (nothing downloaded), with ``chat_template``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    backend = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(specials)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def render_problems(rows, templates: dict[str, str]) -> dict[str, list[str]]:
    """Render every row's ``messages`` + ``tools`` through each template; per template, what went wrong.

    Wrong is: the template raised, a tool call's arguments were not a dict
    (as loaded), or the rendering holds an argument object as a JSON string
    (double-encoded: ``"{\\"order_id\\": ...}"``).
    """
    problems: dict[str, list[str]] = {name: [] for name in templates}
    for name, template in templates.items():
        tokenizer = code_tokenizer(template)
        for row in rows:
            try:
                text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                problems[name].append(f"{row['task_id']}: {type(exc).__name__}: {exc}")
                continue
            for message in row["messages"]:
                for call in message["tool_calls"] or []:
                    arguments = call["function"]["arguments"]
                    if not isinstance(arguments, dict):
                        problems[name].append(f"{row['task_id']}: arguments loaded as {type(arguments).__name__}")
                    elif any(
                        json.dumps(json.dumps(arguments, separators=sep)) in text for sep in ((", ", ": "), (",", ":"))
                    ):
                        problems[name].append(f"{row['task_id']}: arguments rendered as a JSON string")
    return {name: found for name, found in problems.items() if found}


def test_episodes_load_as_tool_calls_with_dict_arguments_and_a_domain_column(sample_run, tmp_path):
    loaded = load_parquet(sample_run / "episodes", tmp_path)
    assert sorted(set(loaded["domain"])) == sorted(SAMPLE_TASKS)
    row = next(r for r in loaded if r["task_id"] == "retail-001")
    calls = [call for m in row["messages"] for call in (m["tool_calls"] or [])]
    assert calls and all(isinstance(c["function"]["arguments"], dict) for c in calls)
    # each call has its own keys (no struct that merges every tool's keys, null for the rest)
    assert all(None not in c["function"]["arguments"].values() for c in calls)
    assert isinstance(row["tools"], list) and row["tools"][0]["type"] == "function"
    assert isinstance(row["reward_breakdown"], dict)
    assert row["messages"][-1] == {
        "role": "assistant",
        "content": "[finish]",
        "tool_calls": None,
        "tool_call_id": None,
        "name": None,
    }


def test_every_tool_capable_trl_chat_template_renders_the_episodes_with_json_object_arguments(sample_run, tmp_path):
    templates = tool_capable_trl_templates()
    assert len(templates) >= 5, sorted(templates)
    rows = list(load_parquet(sample_run / "episodes", tmp_path))
    assert render_problems(rows, templates) == {}


# ------------------------------------------------------------------------ SFT
def tiny_causal_lm(vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=8192,
    )
    return LlamaForCausalLM(config)


def sft_tokenizer(rows):
    """A word-level tokenizer over the rows' words, with TRL's qwen3 training template (assistant masks)."""
    import trl
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    template = (Path(trl.__file__).parent / "chat_templates" / "qwen3_training.jinja").read_text()
    probe = code_tokenizer(template)
    words = {"<pad>", "<unk>", "<s>", "</s>"}
    pre = pre_tokenizers.Whitespace()
    for row in rows:
        text = probe.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    vocab = {
        w: i
        for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>"] + sorted(words - {"<pad>", "<unk>", "<s>", "</s>"}))
    }
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|im_end|>" if "<|im_end|>" in vocab else "</s>",
    )
    tokenizer.chat_template = template
    return tokenizer


def test_trl_sft_trainer_learns_from_the_episodes_as_loaded(sample_run, tmp_path):
    import torch
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(1)
    train = load_parquet(sample_run / "episodes", tmp_path / "cache")  # no conversion between here and the trainer
    tokenizer = sft_tokenizer(train)
    model = tiny_causal_lm(len(tokenizer))
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_length=8192,
        assistant_only_loss=True,
        max_steps=12,
        per_device_train_batch_size=1,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        bf16=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    assert len(trainer.train_dataset) == len(train)  # max_length keeps every episode
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, losses


# ------------------------------------------------------------------ the loaders
def test_loaders_give_sft_rows_prompt_completion_steps_and_arrow_tables(sample_run):
    sft = load_sft(sample_run, min_reward=1.0)
    assert len(sft) == sum(len(t) for t in SAMPLE_TASKS.values())
    assert isinstance(sft[0]["tools"], list)
    steps = load_prompt_completion(sample_run)
    assert len(steps) == read_steps(sample_run, columns=["episode_id"]).num_rows
    first = steps[0]
    assert first["prompt"][0]["role"] == "system" and first["completion"][0]["role"] == "assistant"
    # Markov: each step's prompt is the last one's plus the turns since
    episodes = read_episodes(sample_run, columns=["episode_id", "messages"]).to_pylist()
    table = read_steps(sample_run, columns=["episode_id", "step_index", "prompt", "completion"]).to_pylist()
    for episode in episodes:
        mine = sorted((s for s in table if s["episode_id"] == episode["episode_id"]), key=lambda s: s["step_index"])
        for step, following in zip(mine, mine[1:]):
            assert following["prompt"][: len(step["prompt"])] == step["prompt"]
        assert mine[-1]["completion"][0]["content"] == "[finish]"
        assert all(s["prompt"] == episode["messages"][: len(s["prompt"])] for s in mine)


def test_preference_pairs_from_repeated_trials(tmp_path):
    import copy

    from test_dataset import make_episode

    with ParquetEpisodeWriter(tmp_path, "run1") as writer:
        for trial, reward in enumerate([0.0, 1.0, 0.0]):
            row, steps = make_episode(7, trial=trial)
            row = copy.deepcopy(row)
            row["reward"] = reward
            if reward == 0.0:
                row["messages"][-1]["content"] = '{"status": "cancelled"}'
            writer.write(row, steps)
        writer.write(*make_episode(8))  # one trial only: no pair
    pairs = load_preferences(tmp_path)
    assert len(pairs) == 2
    pair = pairs[0]
    assert pair["score_chosen"] == 1.0 and pair["score_rejected"] == 0.0
    assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    assert pair["chosen"][0]["role"] == "assistant" and pair["chosen"] != pair["rejected"]
    assert isinstance(pair["chosen"][0]["tool_calls"][0]["function"]["arguments"], dict)


def test_a_version_1_dataset_is_refused_with_what_to_do(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_dataset import make_episode

    with ParquetEpisodeWriter(tmp_path, "run1") as writer:
        writer.write(*make_episode(1))
    for path in (tmp_path / "episodes").rglob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata({b"taugym.dataset_schema_version": b"1"}), path)
    with pytest.raises(ValueError, match="schema version 1.*pyarrow.dataset.dataset"):
        read_episodes(tmp_path)
    assert pa  # pyarrow reads the files directly, as the message says


# ------------------------------------------------------------ behaviour policy
@pytest.fixture
def llm_server():
    with FakeLLMServer() as server:
        yield server


@pytest.mark.parametrize("requested", [True, False])
def test_step_rows_keep_the_behaviour_policys_token_logprobs_where_the_server_returns_them(
    llm_server, tmp_path, monkeypatch, requested
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    from test_llm_env import make_agent, make_env, scripted_conversation

    from rollout.episode import WorkItem, play_episode

    llm_server.set_handler(scripted_conversation)
    agent = make_agent(llm_server, sampling={"temperature": 0.0, **({"logprobs": True} if requested else {})})
    result = asyncio.run(
        play_episode(
            make_env(llm_server),
            agent,
            WorkItem("retail", "retail-000", 0, 1),
            run_id="r",
            agent_name="llm",
            agent_model="fake-agent",
        )
    )
    with ParquetEpisodeWriter(tmp_path, "r") as writer:
        writer.write(result["episode"], result["steps"])
    assert not result["episode"]["error"], result["episode"]["error_cause"]
    steps = read_steps(tmp_path, columns=["completion", "completion_token_ids", "completion_logprobs"]).to_pylist()
    assert steps and steps[0]["completion"][0]["tool_calls"]
    for step in steps:
        if requested:
            assert step["completion_logprobs"] and all(x <= 0 for x in step["completion_logprobs"])
            assert len(step["completion_token_ids"]) == len(step["completion_logprobs"])
        else:
            assert step["completion_logprobs"] is None and step["completion_token_ids"] is None


def test_step_rows_read_as_a_ray_dataset_by_one_task(sample_run):
    import ray

    from rollout.dataset import RLLIB_INPUT_READ_SCHEMA
    from rollout.training_data import load_steps_ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = load_steps_ray(sample_run, columns=list(RLLIB_INPUT_READ_SCHEMA.values()) + ["prompt"]).take_all()
    finally:
        ray.shutdown()
    assert len(rows) == read_steps(sample_run, columns=["episode_id"]).num_rows
    assert set(rows[0]) == set(RLLIB_INPUT_READ_SCHEMA.values()) | {"prompt"}
    assert rows[0]["prompt"][0]["role"] == "system"
