"""The one parser of TauGym's action protocol.

An action is a string in one of four forms::

    [search] <query>           look up tools: "tools", "help", or any words
    [action] <message>         say something to the user
    [answer] <tool call>       call one of the domain's tools
    [finish]                   end the episode and be scored

A tool call is either JSON, ``{"name": "get_order_details", "arguments":
{"order_id": "#W001"}}``, or the simple form ``get_order_details {"order_id":
"#W001"}`` (a colon after the name is accepted too). An OpenAI-style tool call
dict (``{"type": "function", "function": {"name": ..., "arguments": "..."}}``)
or an assistant chat message dict with one ``tool_calls`` entry is accepted in
place of a string, so tool-calling LLM policies plug in directly.

:func:`parse_action` never raises: what it cannot read comes back as an
:class:`InvalidAction` whose ``error`` says what was wrong and how to fix it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from taugym.llm.text import valid_unicode_deep

PREFIXES = ("[search]", "[action]", "[answer]", "[finish]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PROTOCOL_HELP = """\
Each step is one action string:
  [search] tools              list every tool with its parameters
  [search] help               show this help
  [search] <words>            list the tools whose name or description match
  [action] <message>          send a message to the user and get their reply
  [answer] <tool call>        call a tool, as JSON {"name": "tool_name", "arguments": {"arg": "value"}}
                              or as tool_name {"arg": "value"}
  [finish]                    end the conversation; the episode is then scored
Work out what the user needs, gather the arguments you need by calling tools or
asking the user, follow the policy, and finish when the user's request is done."""


@dataclass(frozen=True)
class SearchAction:
    """``[search] <query>``: a look-up in the tool list; changes nothing."""

    query: str


@dataclass(frozen=True)
class MessageAction:
    """``[action] <message>``: a message to the user."""

    content: str


@dataclass(frozen=True)
class ToolCallAction:
    """``[answer] <tool call>``: one call of a domain tool."""

    name: str
    arguments: dict = field(default_factory=dict)
    call_id: str | None = None


@dataclass(frozen=True)
class FinishAction:
    """``[finish]``: the agent ends the episode."""


@dataclass(frozen=True)
class InvalidAction:
    """Anything unreadable; ``error`` tells the policy what to send instead."""

    error: str


ParsedAction = SearchAction | MessageAction | ToolCallAction | FinishAction | InvalidAction


def _decode_arguments(raw: Any, name: str) -> dict | InvalidAction:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or a number too long to read
            return InvalidAction(
                f"the arguments of {name} are not valid JSON ({_json_problem(exc)}); "
                'send them as a JSON object, e.g. {"order_id": "#W001"}'
            )
    if not isinstance(raw, dict):
        return InvalidAction(
            f"the arguments of {name} must be a JSON object of argument names to values, got {type(raw).__name__}"
        )
    try:
        json.dumps(raw)  # what reaches the tools and the dataset must be plain JSON data
    except (ValueError, TypeError, RecursionError) as exc:
        return InvalidAction(
            f"the arguments of {name} must be plain JSON data ({_json_problem(exc)}); "
            'send them as a JSON object, e.g. {"order_id": "#W001"}'
        )
    return valid_unicode_deep(raw)  # a JSON escape can hold a lone surrogate too


def _short(exc: BaseException) -> str:
    return str(exc)[:200]


def _json_problem(exc: BaseException) -> str:
    if "integer string conversion" in str(exc):  # Python's int-string limit, not a JSON error
        return f"a number has more than {sys.get_int_max_str_digits()} digits; send long ids as strings"
    return _short(exc)


def _tool_call(name: Any, raw_arguments: Any, call_id: Any = None) -> ToolCallAction | InvalidAction:
    if not isinstance(name, str) or not _NAME.match(name):
        return InvalidAction(
            f"the tool name must be an identifier such as get_order_details, got {str(name)[:100]!r}; "
            "send [search] tools to list the tools"
        )
    arguments = _decode_arguments(raw_arguments, name)
    if isinstance(arguments, InvalidAction):
        return arguments
    return ToolCallAction(name=name, arguments=arguments, call_id=call_id if isinstance(call_id, str) else None)


def _parse_tool_call_text(text: str) -> ToolCallAction | InvalidAction:
    text = text.strip()
    if not text:
        return InvalidAction(
            'the [answer] action needs a tool call: [answer] {"name": "tool_name", "arguments": {...}} '
            'or [answer] tool_name {"arg": "value"}'
        )
    if text.startswith("{"):
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return InvalidAction(
                f"the tool call is not valid JSON ({_json_problem(exc)}); "
                'send {"name": "tool_name", "arguments": {"arg": "value"}}'
            )
        if not isinstance(payload, dict) or "name" not in payload:
            return InvalidAction('a JSON tool call needs a "name" and an "arguments" object')
        if isinstance(payload.get("function"), dict):
            return parse_tool_call_dict(payload)
        return _tool_call(payload.get("name"), payload.get("arguments", {}))
    match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:?\s*(.*)$", text, re.DOTALL)
    if not match:
        return InvalidAction(
            f"could not read a tool call from {text[:100]!r}; "
            'send [answer] tool_name {"arg": "value"} or the JSON form'
        )
    name, rest = match.group(1), match.group(2).strip()
    if rest in ("", "()", "{}"):
        return ToolCallAction(name=name, arguments={})
    if rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1].strip() or "{}"
    return _tool_call(name, rest)


def parse_tool_call_dict(payload: dict) -> ToolCallAction | InvalidAction:
    """Read an OpenAI tool call (``{"id", "type", "function": {...}}``) or ``{"name", "arguments"}``."""
    function = payload.get("function")
    if isinstance(function, dict):
        return _tool_call(function.get("name"), function.get("arguments"), payload.get("id"))
    if "name" in payload:
        return _tool_call(payload.get("name"), payload.get("arguments"), payload.get("id"))
    return InvalidAction('a tool call dict needs {"type": "function", "function": {"name": ..., "arguments": ...}}')


def _parse_dict(action: dict) -> ParsedAction:
    if "tool_calls" in action or "role" in action:
        calls = action.get("tool_calls") or []
        if len(calls) > 1:
            return InvalidAction(f"one tool call per step, got {len(calls)}; send them one at a time")
        if calls:
            if not isinstance(calls[0], dict):
                return InvalidAction("each entry of tool_calls must be an OpenAI tool call dict")
            return parse_tool_call_dict(calls[0])
        content = action.get("content")
        if isinstance(content, str):
            return parse_action(content if content.lstrip().startswith("[") else f"[action] {content}")
        return InvalidAction("an assistant message needs text content or one tool call")
    return parse_tool_call_dict(action)


def parse_action(action: Any) -> ParsedAction:
    """Parse one action (a string, or an OpenAI tool call / assistant message dict).

    Never raises; unreadable input becomes :class:`InvalidAction`. Unpaired
    surrogates in the text are replaced by U+FFFD (see :mod:`taugym.llm.text`).
    """
    action = valid_unicode_deep(action)
    if isinstance(action, dict):
        try:
            return _parse_dict(action)
        except Exception as exc:  # a malformed dict of any shape must not escape step()
            return InvalidAction(f"could not read the action dict ({_short(exc)})")
    if not isinstance(action, str):
        return InvalidAction(f"an action must be a string such as '[action] Hello', got {type(action).__name__}")
    text = action.strip()
    lowered = text[:8].lower()
    body = text[8:]
    if lowered == "[search]":
        query = body.strip()
        if not query:
            return InvalidAction("the [search] action needs a query: [search] tools, [search] help, or words")
        return SearchAction(query=query)
    if lowered == "[action]":
        content = body.strip()
        if not content:
            return InvalidAction("the [action] message is empty; write the message to the user after [action]")
        return MessageAction(content=content)
    if lowered == "[answer]":
        return _parse_tool_call_text(body)
    if lowered == "[finish]":
        return FinishAction()
    preview = text[:60] if text else "(empty)"
    return InvalidAction(
        f"unknown action {preview!r}: an action starts with one of {', '.join(PREFIXES)}; "
        "send [search] help for the protocol"
    )


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


def strip_reasoning(message: str) -> str:
    """Remove ``<think>...</think>`` reasoning before the user sees a message."""
    return _THINK.sub("", message).strip()
