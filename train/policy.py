"""The language-model policy's torch core: a tokenizer, a causal LM, generating and scoring actions.

Importable without Ray. One :class:`ChatPolicy` holds a causal LM and its
tokenizer and does the two things a TauEnv policy needs:

* :meth:`ChatPolicy.prompt_ids`: the chat the agent saw (the conversation in
  OpenAI chat format, system prompt first, and the tool schemas), rendered
  with the tokenizer's chat template and tokenized. A step row's ``prompt``
  and ``tools`` columns give the same ids as the live env's
  ``info["messages"]`` / ``info["tools"]`` for the same step.
* :meth:`ChatPolicy.generate` samples an action's tokens and returns them
  with their log-probabilities; :meth:`ChatPolicy.score` gives the
  log-probabilities of given action tokens after given prompts, teacher
  forced, with gradients. Both mask the same tokens (padding, BOS and every
  special token but the end-of-turn) and use the same temperature, so the
  sampler's and the learner's log-probs agree; keep the sampled ids (never
  re-tokenize the decoded text).

Models: :func:`tiny_policy` builds a small Llama from a config with
:func:`domain_tokenizer` (a byte-level BPE trained with ``tokenizers`` on
the domains' own system prompts and tools, cached on disk; a chat template
that writes the env's action protocol), for tests and CI.
:meth:`ChatPolicy.from_pretrained` loads any local Hugging Face folder (its
tokenizer and chat template included); nothing is downloaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from taugym.actions import PREFIXES

#: A chat model's tool call in the Hermes layout: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.
_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*\})\s*(?:</tool_call>|$)", re.DOTALL)

#: Special tokens of the tokenizer built in code. ``<|end|>`` ends every turn, the action too.
SPECIAL_TOKENS = ["<pad>", "<bos>", "<|end|>", "<|system|>", "<|tools|>", "<|user|>", "<|assistant|>", "<|tool|>"]

#: The chat template of the tokenizer built in code: system prompt, then the tool schemas, then the turns.
#: Assistant turns are written in TauEnv's action protocol (``[answer] {"name": ..., "arguments": {...}}``,
#: ``[action] <text>``, ``[finish]``), so a generated turn is an action the env takes as it is.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}"
    "<|system|>{{ m.content }}{% if tools %}<|tools|>{{ tools | tojson }}{% endif %}<|end|>"
    "{%- elif m.role == 'user' -%}<|user|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'tool' -%}<|tool|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'assistant' -%}<|assistant|>"
    "{%- if m.tool_calls -%}"
    "{%- for c in m.tool_calls -%}"
    '[answer] {"name": {{ c.function.name | tojson }}, "arguments": {{ c.function.arguments | tojson }}}'
    "{%- endfor -%}"
    "{%- elif m.content and m.content.startswith('[') -%}{{ m.content }}"
    "{%- else -%}[action] {{ m.content }}"
    "{%- endif -%}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def _cache_dir() -> Path:
    base = os.environ.get("TAUGYM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "taugym")
    return Path(base)


def domain_texts(domains: Iterable[str] = ("retail", "airline"), backend: str = "tau2") -> list[str]:
    """The texts a domain tokenizer learns from: each domain's system prompt, tool schemas and task scenarios."""
    from taugym.backends import get_backend

    texts = []
    loaded_backend = get_backend(backend)
    for name in domains:
        domain = loaded_backend.load_domain(name)
        texts.append(domain.agent_system_prompt())
        texts.append(json.dumps(domain.tool_schemas, ensure_ascii=False))
        for task in domain.tasks:  # the words users and tool results use (names, ids, products)
            texts.append(task.user_instructions)
            texts.append(json.dumps(list(task.gold_actions), ensure_ascii=False, default=str))
    return texts


def domain_tokenizer(
    domains: Sequence[str] = ("retail", "airline"),
    vocab_size: int = 4096,
    backend: str = "tau2",
    cache: str | Path | None = None,
) -> Any:
    """A ``PreTrainedTokenizerFast``: byte-level BPE trained on the domains' own texts, with :data:`CHAT_TEMPLATE`.

    Byte-level, so every string round-trips through encode/decode. Trained
    once per (domains, vocab size, texts) and cached under ``cache``
    (default ``$TAUGYM_CACHE`` or ``~/.cache/taugym``); the system prompt
    and tools of a retail step come to a few thousand tokens instead of
    19,000 bytes.
    """
    from transformers import PreTrainedTokenizerFast

    texts = domain_texts(domains, backend)
    digest = hashlib.sha256(json.dumps([list(domains), vocab_size, texts, SPECIAL_TOKENS]).encode()).hexdigest()[:16]
    folder = Path(cache) if cache is not None else _cache_dir() / f"tokenizer-{digest}"
    if (folder / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
        if tokenizer.chat_template == CHAT_TEMPLATE:
            return tokenizer
    tokenizer = train_tokenizer(texts, vocab_size)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = folder.with_name(f".{folder.name}.{os.getpid()}")
    tokenizer.save_pretrained(str(staged))
    if folder.exists():  # another process cached it first: keep theirs
        import shutil

        shutil.rmtree(staged, ignore_errors=True)
    else:
        os.replace(staged, folder)
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``, with :data:`SPECIAL_TOKENS` and :data:`CHAT_TEMPLATE`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<|end|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def chat_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Messages as chat templates expect them: tool-call ``arguments`` as objects (datasets store JSON text).

    A template given JSON text writes it as a string (double-encoded); the
    env's ``info["messages"]`` and a step row's ``prompt`` differ only in
    that, and come out the same after this.
    """
    out = []
    for message in messages:
        message = {k: v for k, v in dict(message).items() if v is not None}
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call.get("function") or {})
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments)
                    except ValueError:
                        pass  # a model's broken call: written as the text it was
                function["arguments"] = arguments
                calls.append({**dict(call), "function": function})
            message["tool_calls"] = calls
        out.append(message)
    return out


def _tools(tools: Any) -> list | None:
    if tools is None:
        return None
    return json.loads(tools) if isinstance(tools, str) else list(tools)


class ChatPolicy(torch.nn.Module):
    """A causal LM and its tokenizer as a TauEnv policy (see the module docstring).

    Args:
        model: a ``transformers`` causal LM; put in eval mode with dropout 0
            (sampler and learner must see the same function).
        tokenizer: its tokenizer, with a chat template.
        max_action_tokens: the longest action generated; one that reaches it
            without ``eos`` ends there.
        max_prompt_tokens: prompts longer than this keep their system turn
            (the system prompt and tools), the conversation's opening and its
            most recent tokens; the middle of the conversation is dropped.
        opening_tokens: how much of the conversation's start a clipped
            prompt keeps (where the user says what they want); default 256,
            or a quarter of ``max_prompt_tokens`` when that is less.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_action_tokens: int = 128,
        max_prompt_tokens: int = 8192,
        opening_tokens: int | None = None,
    ):
        super().__init__()
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template; give one that has (or set tokenizer.chat_template)")
        self.model = model
        self.tokenizer = tokenizer
        self.max_action_tokens = int(max_action_tokens)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.opening_tokens = min(256, self.max_prompt_tokens // 4) if opening_tokens is None else int(opening_tokens)
        if self.max_prompt_tokens < 2 * self.opening_tokens:
            raise ValueError(
                f"max_prompt_tokens ({max_prompt_tokens}) must be at least twice opening_tokens ({opening_tokens})"
            )
        _no_dropout(model)
        self.model.eval()
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        vocab = int(model.get_output_embeddings().weight.shape[0])
        banned = torch.zeros(vocab, dtype=torch.bool)
        for token_id in tokenizer.all_special_ids:
            if token_id != self.eos_id and token_id < vocab:
                banned[token_id] = True  # PAD, BOS and role markers are never sampled
        self.register_buffer("banned", banned, persistent=False)
        self._prefix: tuple[list[int], Any] | None = None
        self._system_prompts: dict[str, list[int]] = {}  # digest of (system prompt, tools) -> their token ids

    # ---------------------------------------------------------------- text
    def prompt_text(self, messages: Sequence[Mapping[str, Any]], tools: Any = None) -> str:
        """The chat rendered with the tokenizer's template, ending where the assistant's turn begins."""
        return self.tokenizer.apply_chat_template(
            chat_messages(messages), tools=_tools(tools), tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]], tools: Any = None) -> list[int]:
        """The token ids of :meth:`prompt_text` (the template writes BOS; none is added again).

        Also notes the ids of the chat's system turn (system prompt and
        tools), which :meth:`score` computes once per batch.
        """
        ids = list(self.tokenizer(self.prompt_text(messages, tools), add_special_tokens=False)["input_ids"])
        if messages and messages[0].get("role") == "system":
            tools = _tools(tools)
            key = json.dumps([messages[0].get("content"), tools], sort_keys=True, default=str)
            digest = hashlib.sha256(key.encode()).hexdigest()
            if digest not in self._system_prompts:
                head = self.tokenizer.apply_chat_template(
                    chat_messages(messages[:1]), tools=tools, tokenize=False, add_generation_prompt=False
                )
                head_ids = list(self.tokenizer(head, add_special_tokens=False)["input_ids"])
                if ids[: len(head_ids)] == head_ids:  # the template writes the system turn as the prompt's start
                    self._system_prompts[digest] = head_ids
        return ids

    def action_ids(
        self, prompt: Sequence[Mapping[str, Any]], completion: Mapping[str, Any], tools: Any = None
    ) -> list[int]:
        """The tokens of an assistant turn as the template writes it after ``prompt``, ``eos`` included.

        For behaviour cloning from step rows: the target is what the
        template renders for the ``completion`` message, so a generated
        action and a demonstrated one have the same form.
        """
        tools = _tools(tools)
        full = self.tokenizer.apply_chat_template(
            chat_messages([*prompt, completion]), tools=tools, tokenize=False, add_generation_prompt=False
        )
        head = self.prompt_text(prompt, tools)
        if not full.startswith(head):
            raise ValueError("the chat template does not write the assistant turn after the prompt it renders")
        body = full[len(head) :]
        if body.endswith(self.tokenizer.eos_token):
            body = body[: -len(self.tokenizer.eos_token)]
        ids = list(self.tokenizer(body, add_special_tokens=False)["input_ids"])
        return ids[: self.max_action_tokens - 1] + [self.eos_id]

    def decode_action(self, token_ids: Sequence[int]) -> str:
        """The action of generated ids (up to ``eos``; special tokens dropped), in TauEnv's protocol.

        A turn written in the protocol (the tiny model's template writes
        them so) is the action as it is; a chat model's ``<tool_call>``
        block (the Hermes layout of SmolLM2, Qwen and others) is an
        ``[answer]``; any other reply is a message to the user
        (``[action]``), as the LLM agent takes a reply's text.
        """
        ids = [int(t) for t in token_ids if int(t) >= 0]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        if not text or text.startswith(PREFIXES):
            return text
        call = _TOOL_CALL.search(text)
        return f"[answer] {call.group(1).strip()}" if call else f"[action] {text}"

    def clip_prompt(self, ids: list[int]) -> list[int]:
        """``ids`` within ``max_prompt_tokens``: the system turn (system prompt and tools), the conversation's
        first ``opening_tokens`` (the user's request) and its most recent rest; without the system turn where
        it leaves no room for the conversation."""
        if len(ids) <= self.max_prompt_tokens:
            return ids
        system = self._system_turn(ids)
        conversation = ids[len(system) :]
        if self.max_prompt_tokens - len(system) < 2 * self.opening_tokens:  # no room: the conversation alone
            system = []
        room = self.max_prompt_tokens - len(system)
        if len(conversation) <= room:
            return system + conversation
        opening = conversation[: self.opening_tokens]
        return system + opening + conversation[len(conversation) - (room - len(opening)) :]

    # ---------------------------------------------------------------- model
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _log_probs(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        logits = logits.float()
        if temperature > 0:
            logits = logits / temperature
        logits = logits.masked_fill(self.banned[: logits.shape[-1]], float("-inf"))
        return torch.log_softmax(logits, dim=-1)

    def _prefill(self, prompt: list[int]) -> tuple[torch.Tensor, Any]:
        """Logits after ``prompt`` and the KV cache, reusing the cache of the longest prefix shared with
        the first prompt this policy saw (for a domain: its system prompt and tools)."""
        shared = 0
        if self._prefix is not None:
            cached_ids, _ = self._prefix
            limit = min(len(cached_ids), len(prompt) - 1)
            while shared < limit and cached_ids[shared] == prompt[shared]:
                shared += 1
        device = self.device
        if shared >= 64:
            cache = copy.deepcopy(self._prefix[1])
            cache.crop(shared - len(self._prefix[0]))  # a negative count: the tokens to remove
            rest = torch.tensor([prompt[shared:]], device=device)
            out = self.model(input_ids=rest, cache=cache, use_cache=True)
            return out.logits[0, -1], out.cache
        out = self.model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
        if self._prefix is None:
            self._prefix = (list(prompt), copy.deepcopy(out.cache))
        return out.logits[0, -1], out.cache

    def forget_prefix(self) -> None:
        """Drop the cached prefix (after the weights changed)."""
        self._prefix = None

    @torch.no_grad()
    def generate(
        self, prompt: Sequence[int], temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> tuple[list[int], list[float]]:
        """Sample one action after ``prompt``: its token ids (``eos`` last unless cut at
        ``max_action_tokens``) and each token's log-probability at ``temperature``.

        ``temperature=0`` is greedy; its log-probs are then at temperature 1.
        """
        logits, cache = self._prefill(list(prompt))
        ids: list[int] = []
        logps: list[float] = []
        device = self.device
        for _ in range(self.max_action_tokens):
            log_probs = self._log_probs(logits, temperature if temperature > 0 else 1.0)
            if temperature > 0:
                token = int(torch.multinomial(log_probs.exp(), 1, generator=generator).item())
            else:
                token = int(torch.argmax(log_probs).item())
            ids.append(token)
            logps.append(float(log_probs[token]))
            if token == self.eos_id:
                break
            out = self.model(input_ids=torch.tensor([[token]], device=device), cache=cache, use_cache=True)
            logits, cache = out.logits[0, -1], out.cache
        return ids, logps

    def score(
        self, prompts: Sequence[Sequence[int]], actions: Sequence[Sequence[int]], temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-token log-probs of each action after its prompt, teacher forced: ``[B, T]``, 0 at padding.

        ``T`` is the longest action; negative ids in ``actions`` are padding.
        Summed over a row it is the action's log-probability; gradients flow.
        """
        logps, _ = self.score_and_hidden(prompts, actions, temperature)
        return logps

    def score_and_hidden(
        self, prompts: Sequence[Sequence[int]], actions: Sequence[Sequence[int]], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`score` and the last hidden state at each prompt's last token (``[B, H]``, for a value head).

        A prompt that starts with a system turn :meth:`prompt_ids` has
        rendered (a domain's system prompt and tools, the same for every
        step) reuses that turn's keys and values, computed once per call
        without gradients: the weights learn from every token after it.
        The log-probs are those of the whole prompt either way.
        """
        device = self.device
        actions = [[int(t) for t in a if int(t) >= 0] for a in actions]
        prompts = [[int(t) for t in p] for p in prompts]
        head = self.model.get_output_embeddings()
        horizon = max(1, max(len(a) for a in actions))
        logps = torch.zeros((len(prompts), horizon), device=device)
        hidden: list[Any] = [None] * len(prompts)
        caches: dict[int, Any] = {}
        computed: list[tuple[list[int], int, torch.Tensor]] = []  # (sequence, its first token in states, states)
        # Longest first: a step's prompt and action are the start of the episode's later prompts, so one
        # pass over an episode's last step scores all its steps (causal: the same values and gradients).
        for row in sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(actions[i]))):
            p, a = prompts[row], actions[row]
            sequence = p + a
            host = next((c for c in computed if len(c[0]) >= len(sequence) and c[0][: len(sequence)] == sequence), None)
            if host is None:
                host = (sequence, *self._decode(sequence, self._system_turn(p), caches))
                computed.append(host)
            _, start, states = host
            last = len(p) - start - 1  # the prompt's last token in ``states``
            hidden[row] = states[last]
            if a:
                log_probs = self._log_probs(head(states[last : last + len(a)]), temperature)
                target = torch.tensor(a, device=device)
                logps[row, : len(a)] = log_probs.gather(-1, target[:, None])[:, 0]
        return logps, torch.stack(hidden)

    def _decode(self, sequence: list[int], system: list[int], caches: dict[int, Any]) -> tuple[int, torch.Tensor]:
        """The decoder's last hidden states of ``sequence`` after its system turn (from ``caches``, filled
        once without gradients), and the index of the first token they cover.

        One sequence at a time, unpadded: causal attention then needs no mask and runs in the fused
        kernel; a padded batch of few-thousand-token prompts materialises every attention matrix (GBs).
        The LM head then runs only where an action token is predicted.
        """
        decoder = self.model.base_model
        device = self.device
        tokens = torch.tensor([sequence[len(system) :]], device=device)
        if not system:
            return 0, decoder(input_ids=tokens, use_cache=False).last_hidden_state[0]
        if id(system) not in caches:
            with torch.no_grad():
                caches[id(system)] = decoder(input_ids=torch.tensor([system], device=device), use_cache=True).cache
        cache = copy.deepcopy(caches[id(system)])
        return len(system), decoder(input_ids=tokens, cache=cache, use_cache=True).last_hidden_state[0]

    def _system_turn(self, prompt: list[int]) -> list[int]:
        """The noted system turn ``prompt`` starts with (shorter than the prompt), or ``[]``."""
        for ids in self._system_prompts.values():
            if len(ids) < len(prompt) and prompt[: len(ids)] == ids:
                return ids
        return []

    # ---------------------------------------------------------------- building
    @classmethod
    def from_pretrained(cls, folder: str | Path, torch_dtype: Any = None, device: str | None = None, **options: Any):
        """A policy from a local Hugging Face folder (model, tokenizer and chat template); nothing is downloaded."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(folder)
        if not (path / "config.json").exists():
            raise ValueError(f"{folder} is not a Hugging Face model folder (no config.json); give a local folder")
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype)
        if device:
            model.to(device)
        return cls(model, tokenizer, **options)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a Hugging Face folder (model, tokenizer, chat template) any OpenAI-compatible server can load."""
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


def tiny_model(
    tokenizer: Any, hidden_size: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 16384, seed: int = 0
):
    """A small randomly initialised ``LlamaForCausalLM`` for ``tokenizer`` (dropout 0)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def tiny_policy(domains: Sequence[str] = ("retail", "airline"), seed: int = 0, **options: Any) -> ChatPolicy:
    """:class:`ChatPolicy` over :func:`tiny_model` and :func:`domain_tokenizer` (the CI default)."""
    model_options = {k: options.pop(k) for k in ("hidden_size", "layers", "heads", "max_positions") if k in options}
    tokenizer = domain_tokenizer(domains)
    return ChatPolicy(tiny_model(tokenizer, seed=seed, **model_options), tokenizer, **options)


def _no_dropout(model: Any) -> None:
    """Dropout off everywhere (sampler and learner must compute the same function)."""
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
