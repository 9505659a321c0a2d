"""TauEnv: tau-bench's tool-agent-user tasks as a Gymnasium environment."""

from __future__ import annotations

import logging
import string
from collections.abc import Generator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from taugym.actions import (
    PROTOCOL_HELP,
    FinishAction,
    InvalidAction,
    MessageAction,
    SearchAction,
    ToolCallAction,
    parse_action,
    strip_reasoning,
)
from taugym.backends import get_backend
from taugym.backends.base import USER_STOP_TOKENS, Domain, Evaluation, Session, TaskSpec, openai_tool_call
from taugym.config import TauGymConfig, get_default_config
from taugym.users import SimulatedUser, UserDevice, make_user

_log = logging.getLogger("taugym.env")


class UnicodeText(spaces.Text):
    """A Text space whose members are any strings up to ``max_length`` characters.

    Gymnasium's ``Text`` admits only its charset (alphanumerics by default);
    dialogue and JSON use every character, so membership checks the length
    only. Samples are drawn from printable ASCII.
    """

    def __init__(self, max_length: int, **kwargs: Any):
        super().__init__(max_length=max_length, min_length=0, charset=string.printable, **kwargs)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length


class EpisodeStartError(RuntimeError):
    """``reset`` could not start the episode; the env refuses ``step`` until a reset succeeds.

    ``source`` says what failed: ``"setup"`` (the task's set-up in the
    backend) or ``"user"`` (the simulated user's first message).
    """

    def __init__(self, message: str, source: str):
        super().__init__(message)
        self.source = source

    def __reduce__(self):
        return (EpisodeStartError, (str(self), self.source))


CONTEXT_LENGTH = "context_length"
"""The termination of an episode whose conversation no longer fits the user's or the agent's model."""

TERMINATIONS = frozenset({"agent", "user", "max_steps", "max_errors", "error"})
"""The terminations the env gives itself (``truncate`` names others)."""


class TauEnv(gym.Env):
    """A customer-support conversation from tau-bench: an agent, a simulated user and tools.

    ## Description
    Each episode is one tau-bench task (e.g. "exchange two items of order
    #W2378156"). The agent talks to a simulated customer and calls the
    domain's tools (look up users, orders, flights; cancel, exchange, book)
    under the domain's policy. When the conversation ends, the benchmark
    itself scores the episode: tau2's database-hash and communicate checks
    (or tau-bench v1's data hash and outputs).

    ## Action Space
    ``UnicodeText``: one string per step, in one of four forms:
    ``[search] <query>`` (``tools``, ``help`` or words: look up tools),
    ``[action] <message to the user>``, ``[answer] <tool call>`` (JSON
    ``{"name": ..., "arguments": {...}}`` or ``tool_name {"arg": ...}``) and
    ``[finish]``. An OpenAI-style tool call dict or assistant message dict is
    accepted too. Malformed actions never raise: the feedback says what was
    wrong, the step counts, and the episode's state is untouched.

    ## Observation Space
    A ``Dict``: ``instruction`` (the agent's system prompt: the benchmark's
    agent instruction and domain policy, unchanged), ``feedback`` (the user's
    reply, the tool's result, the search result or the error),
    ``step_count`` (int32), ``episode_complete`` (0 or 1), ``tools_info``
    (every tool with its parameters, as text).

    ## Rewards
    0 at every step but the last, minus ``step_penalty`` per step. When the
    user ends the conversation or the agent sends ``[finish]``, the reward is
    the backend's own evaluation (1.0 or 0.0). Truncation at ``max_steps``
    gives 0; ``info["evaluation"]`` still reports how the trajectory would
    have scored. With ``normalize_rewards`` every step gives 0 and the last
    step gives the episode return mapped into [0, 1].

    ## Starting State
    ``reset(seed=..., options={"task_id": "retail-019"})`` picks the task:
    ``options["task_id"]``, else ``config.data_source``, else the next task
    of ``task_split`` (``data_mode="sequential"``) or a seeded draw from it.
    The conversation opens with the benchmark's greeting and the user's
    first message. The same seed gives the same task and the same user.
    A reset that fails raises ``EpisodeStartError`` (``source``: ``setup``
    for the task's set-up, ``user`` for the user's first message) and leaves
    no episode: ``step`` is refused until a reset succeeds.

    ## Episode End
    Terminated when the user ends the conversation (``###STOP###``,
    ``###TRANSFER###``, ``###OUT-OF-SCOPE###``), on ``[finish]``, or when
    the user simulator fails for good (``info["error"]`` says why; the
    episode is marked an error, not a failed task). Truncated at
    ``max_steps``, and when the conversation no longer fits a model's
    context (``termination`` ``context_length``, scored as it stands): the
    user model's, found by the env, or the agent's, reported by the policy
    through ``truncate("context_length")`` (the rollout job does this when
    the LLM agent's call overflows).

    ## Info
    ``task_id``, ``domain``, ``backend``, ``task`` (the task's scenario and
    ground truth: for analysis and reference policies, never for a learning
    policy), ``messages`` (the conversation in OpenAI chat format, system
    prompt first, tool calls and results included), ``tools`` (OpenAI tool
    schemas), ``llm_usage``; at the end ``evaluation`` (the backend's reward
    breakdown), ``termination`` (``agent``, ``user``, ``max_steps``,
    ``max_errors``, ``context_length``, ``error``) and ``error`` where there was one; ``user_notes`` where the
    user has something to report (the replay user: where the agent left
    the recorded conversation).

    ## Arguments
    ``TauEnv(config)`` with a :class:`TauGymConfig`, a dict of its options,
    or a path to a YAML file; keyword overrides are applied on top.
    ``render_mode``: ``"ansi"`` (render returns the conversation) or
    ``"human"`` (prints it).

    ## Version History
    * v0: tau2 and tau-bench v1 backends, scripted and LLM users.
    """

    metadata = {"render_modes": ["human", "ansi"], "render_fps": 4}

    def __init__(
        self,
        config: TauGymConfig | dict | str | Path | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        super().__init__()
        self.config = _as_config(config, overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.backend = get_backend(self.config.backend)
        self.backend.set_verbose(self.config.verbose)
        self.domain: Domain = self.backend.load_domain(self.config.task_category)
        self.task_split = self.config.task_split or self.domain.default_split
        if self.task_split not in self.domain.splits:
            raise ValueError(
                f"task_split {self.task_split!r} is not a split of {self.config.backend} "
                f"{self.domain.name}; valid choices: {sorted(self.domain.splits)}"
            )
        self.max_errors = self.domain.default_max_errors if self.config.max_errors is None else self.config.max_errors
        if self.config.data_source is not None:
            self._task_index(self.config.data_source)  # fail now, not at reset
        self.user: SimulatedUser = make_user(self.config, self.domain)
        self.tools_info = _format_tools(self.domain.tool_schemas)
        self.instruction = self.domain.agent_system_prompt()
        self.action_space = UnicodeText(max_length=self.config.max_action_chars)
        self.observation_space = spaces.Dict(
            {
                "instruction": UnicodeText(max_length=max(len(self.instruction), 1)),
                "feedback": UnicodeText(max_length=self.config.max_feedback_chars + 200),
                "step_count": spaces.Box(low=0, high=self.config.max_steps, shape=(), dtype=np.int32),
                "episode_complete": spaces.Discrete(2),
                "tools_info": UnicodeText(max_length=max(len(self.tools_info), 1)),
            }
        )
        self._sequential_position = 0
        self._first_reset = True
        self.task: TaskSpec | None = None
        self.session: Session | None = None
        self.messages: list[dict] = []
        self.step_count = 0
        self.episode_complete = False
        self.episode_return = 0.0
        self._call_counter = 0
        self.tool_errors = 0
        self._last_feedback = ""
        self._end_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; see ``## Starting State``. Returns ``(observation, info)``."""
        return _drive_sync(self._reset_steps(seed, options), self.user)

    async def reset_async(self, *, seed: int | None = None, options: dict | None = None):
        """``reset`` as a coroutine: the user's first message is awaited, not blocked on."""
        return await _drive_async(self._reset_steps(seed, options), self.user)

    def _reset_steps(self, seed: int | None, options: dict | None) -> Generator[str, str, tuple]:
        if seed is None and self._first_reset:
            seed = self.config.seed
        super().reset(seed=seed)
        self._first_reset = False
        options = options or {}
        if not isinstance(options, dict):
            raise ValueError(
                f"options must be a dict such as {{'task_id': 'retail-019'}}, got {type(options).__name__}"
            )
        unknown = sorted(set(options) - {"task_id"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; the only option is 'task_id'")
        self.session = None  # no episode to step until this reset succeeds
        index = self._choose_task(options.get("task_id"))
        self.task = self.domain.tasks[index]
        self._task_info = self.task.to_dict()  # once per episode, not per step
        try:
            session = self.domain.new_session(index)
        except Exception as exc:
            raise EpisodeStartError(
                f"the set-up of task {self.task.task_id} failed: {type(exc).__name__}: {exc}", source="setup"
            ) from exc
        self.session = session
        self.step_count = 0
        self.episode_complete = False
        self.episode_return = 0.0
        self._call_counter = 0
        self.tool_errors = 0
        self._end_info = {}
        self.episode_id = self.np_random.bytes(8).hex()  # reproducible for a seed, like the rest
        history = self.session.agent_history()
        self.messages = [{"role": "system", "content": self.instruction}, *history]
        device = (
            UserDevice(self.domain.user_tool_schemas, self._call_user_tool) if self.domain.user_tool_schemas else None
        )
        last = history[-1] if history else None
        user_history = self.session.user_history()
        if last is not None and last["role"] == "assistant":
            user_history = user_history[:-1]  # the user is about to answer it, as in tau2's orchestrator
        self.user.begin(self.task, int(self.np_random.integers(0, 2**31 - 1)), user_history, device)
        if last is not None and last["role"] != "assistant":  # the history ends with the user's turn: the agent acts
            speaker = f"Tool {last.get('name')}" if last["role"] == "tool" else "User"
            self._last_feedback = f"{speaker}: {last['content']}"
            return self._observation(), self._info()
        if last is None:
            greeting = self.domain.first_agent_message or ""
            if greeting:
                self.session.record_agent_message(greeting)
                self.messages.append({"role": "assistant", "content": greeting})
        else:
            greeting = last["content"] or ""
        try:
            first = yield greeting  # the step logic asks the user to reply to it
        except Exception as exc:
            self.session = None
            raise EpisodeStartError(
                f"the user simulator could not start task {self.task.task_id}: {type(exc).__name__}: {exc}",
                source="user",
            ) from exc
        self._record_user(first)
        self._last_feedback = f"User: {first}"
        if self.config.verbose:
            _log.info("reset %s: user: %s", self.task.task_id, first)
        return self._observation(), self._info()

    def _choose_task(self, task_id: str | None) -> int:
        if task_id is not None:
            return self._task_index(task_id)
        if self.config.data_source is not None:
            return self._task_index(self.config.data_source)
        split = self.domain.splits[self.task_split]
        if self.config.data_mode == "sequential":
            index = split[self._sequential_position % len(split)]
            self._sequential_position += 1
            return index
        return split[int(self.np_random.integers(0, len(split)))]

    def _task_index(self, task_id: Any) -> int:
        count = len(self.domain.tasks)
        valid = f"{self.domain.name}-000 … {self.domain.name}-{count - 1:03d}"
        if not isinstance(task_id, str) or "-" not in task_id:
            raise ValueError(f"task id must look like '{self.domain.name}-019'; valid range: {valid}")
        domain, _, number = task_id.rpartition("-")
        if domain != self.domain.name:
            raise ValueError(
                f"task id {task_id!r} is not a {self.domain.name} task (task_category is "
                f"{self.domain.name!r}); valid range: {valid}"
            )
        index = int(number) if number.isascii() and number.isdigit() else -1
        if not 0 <= index < count or self.domain.tasks[index].task_id != task_id:  # 'retail-5' is not 'retail-005'
            raise ValueError(f"unknown task id {task_id!r}; valid range: {valid}")
        return index

    # ------------------------------------------------------------------- step
    def step(self, action: Any):
        """Take one action; returns ``(observation, reward, terminated, truncated, info)``."""
        self._check_can_step()
        return _drive_sync(self._step_steps(action), self.user)

    async def step_async(self, action: Any):
        """``step`` as a coroutine: waits on the user (an LLM call) are awaited, so many
        envs in one event loop overlap them."""
        self._check_can_step()
        return await _drive_async(self._step_steps(action), self.user)

    def _check_can_step(self) -> None:
        if self.session is None:
            raise RuntimeError("call reset() before step(); after a reset that failed, call reset() again")
        if self.episode_complete:
            raise RuntimeError("the episode is over; call reset() to start a new one")

    def _step_steps(self, action: Any) -> Generator[str, str, tuple]:
        self.step_count += 1
        stop: str | None = None  # who ended the episode
        error: dict | None = None
        if isinstance(action, str) and len(action) > self.config.max_action_chars:
            parsed: Any = InvalidAction(
                f"the action is {len(action)} characters long; the limit is {self.config.max_action_chars}"
            )
        else:
            parsed = parse_action(action)
        if isinstance(parsed, InvalidAction):
            feedback = f"Error: {parsed.error}"
        elif isinstance(parsed, SearchAction):
            feedback = self._search(parsed.query)
        elif isinstance(parsed, ToolCallAction):
            feedback = self._call_tool(parsed)
        elif isinstance(parsed, FinishAction):
            feedback = "The conversation is over; the episode is being scored."
            stop = "agent"
        else:
            assert isinstance(parsed, MessageAction)
            message = strip_reasoning(parsed.content)
            if not message:
                feedback = (
                    "Error: the [action] message held only <think> reasoning; write the message to the user after it"
                )
            else:
                self.session.record_agent_message(message)
                self.messages.append({"role": "assistant", "content": message})
                try:
                    reply = yield message
                except Exception as exc:
                    if getattr(exc, "context_overflow", False):  # the user model's context is full: not a fault
                        stop = CONTEXT_LENGTH
                    else:
                        error = {"source": "user", "type": type(exc).__name__, "message": str(exc)}
                    reply = None
                if reply is not None:
                    self._record_user(reply)
                    feedback = f"User: {reply}"
                    if any(token in reply for token in USER_STOP_TOKENS):
                        stop = "user"
                elif stop == CONTEXT_LENGTH:
                    feedback = "The conversation no longer fits the user model's context; the episode ends here."
                else:
                    feedback = f"Error: the user simulator failed: {error['message']}"
        self._last_feedback = feedback
        if self.config.verbose:
            _log.info("step %d %s | %s", self.step_count, _preview(action), feedback[:200])
        return self._finish_step(stop, error)

    def truncate(self, termination: str = CONTEXT_LENGTH):
        """End the episode now, before the agent's next action, as truncated; returns ``step``'s 5-tuple.

        For a policy that cannot act any more for a reason that is not the
        task's (``context_length``: the conversation no longer fits its
        model's context). The episode is scored as it stands, as at
        ``max_steps``; ``info["termination"]`` is ``termination``. No step
        is counted and the observation does not change.
        """
        self._check_can_step()
        if not isinstance(termination, str) or not termination or termination in TERMINATIONS:
            raise ValueError(
                f"termination must name why the policy stopped, such as {CONTEXT_LENGTH!r}, and not one the env "
                f"gives itself {sorted(TERMINATIONS)}; got {termination!r}"
            )
        return self._finish_step(termination, None, penalty=False)

    def _finish_step(self, stop: str | None, error: dict | None, penalty: bool = True) -> tuple:
        reward = 0.0 - float(self.config.step_penalty) if penalty else 0.0  # not -0.0 when there is no penalty
        too_many_errors = (
            stop is None and error is None and bool(self.max_errors) and self.tool_errors >= self.max_errors
        )
        cut = stop is not None and stop not in ("agent", "user")  # context_length: truncated, not terminated
        terminated = (stop is not None and not cut) or error is not None or too_many_errors
        truncated = not terminated and (cut or self.step_count >= self.config.max_steps)
        evaluation: Evaluation | None = None
        if stop is not None or truncated or too_many_errors:
            evaluation = self.session.evaluate(stop if stop in ("agent", "user") else None)  # type: ignore[arg-type]
            reward += evaluation.reward
        self.episode_return += reward
        if terminated or truncated:
            self.episode_complete = True
            ending = "max_errors" if too_many_errors else "max_steps"
            self._end_info = {
                "termination": "error" if error else (stop if stop else ending),
                "evaluation": evaluation.breakdown if evaluation else None,
                "benchmark_reward": evaluation.reward if evaluation else None,
            }
            if error:
                self._end_info["error"] = error
        if self.config.normalize_rewards:
            reward = self._normalized_return() if self.episode_complete else 0.0
        return self._observation(), reward, terminated, truncated, self._info()

    def _normalized_return(self) -> float:
        lowest = -float(self.config.step_penalty) * self.config.max_steps
        return float(np.clip((self.episode_return - lowest) / (1.0 - lowest), 0.0, 1.0))

    # ------------------------------------------------------------- handlers
    def _search(self, query: str) -> str:
        lowered = query.strip().lower()
        if lowered == "tools":
            return self.tools_info
        if lowered == "help":
            return PROTOCOL_HELP
        words = lowered.replace("_", " ").split()
        matches = [schema for schema in self.domain.tool_schemas if all(w in _search_text(schema) for w in words)]
        if not matches:
            return f"No tool matches {query!r}. Send [search] tools for the full list."
        return _format_tools(matches)

    def _call_tool(self, call: ToolCallAction) -> str:
        problem = self.domain.check_tool_call(call.name, call.arguments)
        if problem is not None:
            self.tool_errors += 1  # tau2's tools would have raised: an error towards max_errors
            return f"Error: {problem}"
        self._call_counter += 1
        call_id = call.call_id or f"call_{self._call_counter}"
        result = self.session.call_tool(call.name, call.arguments, call_id)
        self.tool_errors += result.error
        tool_call = openai_tool_call(call_id, call.name, call.arguments)
        self.messages.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
        self.messages.append({"role": "tool", "tool_call_id": call_id, "name": call.name, "content": result.content})
        content = result.content
        limit = self.config.max_feedback_chars
        if len(content) > limit:
            content = content[:limit] + f"\n[... cut: the result has {len(result.content)} characters, {limit} shown]"
        return f"Tool {call.name}: {content}"

    def _call_user_tool(self, name: str, arguments: Any, call_id: str | None) -> str:
        """Run one of the user's own tools for the user simulator; the result is the user's only."""
        problem = (
            f"the arguments of {name} must be a JSON object, got {type(arguments).__name__}"
            if not isinstance(arguments, dict)
            else self.domain.check_user_tool_call(name, arguments)
        )
        if problem is not None:
            self.tool_errors += 1
            return f"Error: {problem}"
        self._call_counter += 1
        result = self.session.call_user_tool(name, arguments, call_id or f"user_call_{self._call_counter}")
        self.tool_errors += result.error
        return result.content

    def _record_user(self, text: str) -> None:
        self.session.record_user_message(text)
        self.messages.append({"role": "user", "content": text})

    # ------------------------------------------------------- observations
    def _observation(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "feedback": self._last_feedback,
            "step_count": np.array(min(self.step_count, self.config.max_steps), dtype=np.int32),
            "episode_complete": int(self.episode_complete),
            "tools_info": self.tools_info,
        }

    def _info(self) -> dict[str, Any]:
        info = {
            "task_id": self.task.task_id,
            "domain": self.domain.name,
            "backend": self.config.backend,
            "episode_id": self.episode_id,
            "task": self._task_info,
            "messages": list(self.messages),
            "tools": self.domain.tool_schemas,
            "step_count": self.step_count,
            "llm_usage": self.user.usage(),
        }
        notes = self.user.notes()
        if notes:
            info["user_notes"] = notes
        info.update(self._end_info)
        return info

    def render(self) -> str | None:
        """The conversation so far as text (``ansi``), or printed (``human``)."""
        if self.render_mode is None:
            gym.logger.warn("render() was called with render_mode=None; pass render_mode='ansi' or 'human'")
            return None
        lines = []
        for message in self.messages[1:]:
            if message.get("tool_calls"):
                function = message["tool_calls"][0]["function"]
                lines.append(f"agent -> tool: {function['name']}({function['arguments']})")
            elif message["role"] == "tool":
                lines.append(f"tool: {message['content'][:500]}")
            else:
                lines.append(f"{message['role']}: {message['content']}")
        text = "\n".join(lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        """Release the episode's state."""
        self.session = None
        self.messages = []


def _drive_sync(steps: Generator, user: SimulatedUser):
    """Run step logic, answering each message it yields with the user's reply, blocking."""
    try:
        message = next(steps)
        while True:
            try:
                reply = user.respond(message)
            except Exception as exc:
                message = steps.throw(exc)
            else:
                message = steps.send(reply)
    except StopIteration as done:
        return done.value


async def _drive_async(steps: Generator, user: SimulatedUser):
    """Run step logic, answering each message it yields with the user's reply, awaited."""
    try:
        message = next(steps)
        while True:
            try:
                reply = await user.arespond(message)
            except Exception as exc:
                message = steps.throw(exc)
            else:
                message = steps.send(reply)
    except StopIteration as done:
        return done.value


def _preview(action: Any) -> str:
    """The start of an action for the log; never raises (``str`` of a huge int does)."""
    try:
        return str(action)[:200]
    except Exception:
        return f"<{type(action).__name__}>"


def _search_text(schema: dict) -> str:
    """What ``[search]`` matches words against: the tool's name (``_`` as spaces) and description, lower case."""
    function = schema["function"]
    return f"{function['name'].replace('_', ' ')} {function.get('description', '')}".lower()


def _format_tools(schemas: list[dict]) -> str:
    lines = ["Available tools:"]
    for schema in schemas:
        function = schema["function"]
        lines.append(f"- {function['name']}: {' '.join(function.get('description', '').split())}")
        parameters = function.get("parameters") or {}
        required = set(parameters.get("required", []))
        for name, spec in (parameters.get("properties") or {}).items():
            kind = spec.get("type") or "/".join(o.get("type", "?") for o in spec.get("anyOf", [])) or "any"
            flag = "required" if name in required else "optional"
            description = " ".join(str(spec.get("description", "")).split())
            lines.append(f"    - {name} ({kind}, {flag}): {description}")
    return "\n".join(lines)


def _as_config(config: TauGymConfig | dict | str | Path | None, overrides: dict) -> TauGymConfig:
    if isinstance(config, dict):
        config = TauGymConfig.from_dict(config)
    elif isinstance(config, (str, Path)):
        config = TauGymConfig.from_yaml(config)
    elif not isinstance(config, TauGymConfig | None):
        raise ValueError(
            f"config must be a TauGymConfig, a dict of options or a YAML path, got {type(config).__name__}"
        )
    config = config or get_default_config()
    return config.replace(**overrides) if overrides else config.validate()
