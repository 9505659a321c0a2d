"""ScriptedUser: an offline, deterministic user built from the task's own scenario.

It exists so the whole pipeline (env, rollouts, datasets, training) runs with
no network and no API key. It is **no substitute for an LLM user when
benchmarking**: it recognises a handful of agent intents by keywords and
answers from the task's scenario text; it does not reason.

Its first message states its reason for calling. Then, in order of
precedence, for each agent message:

* if the agent has transferred it to a human, it ends with ``###TRANSFER###``;
* if the agent asks it to do something on its device (tau2 telecom: the
  message names one of the user's tools, as ``toggle_airplane_mode`` or
  "toggle airplane mode", followed by a JSON object of arguments where the
  tool takes any), it runs those tools on its device, in the order named,
  and reports their results;
* if the agent says goodbye or asks whether there is anything else, or stalls
  (repeats itself, or exceeds ``patience`` messages), it ends with ``###STOP###``;
* if the agent asks for confirmation, it confirms ("yes");
* if the agent offers choices in quotes ("'no longer needed' or 'ordered by
  mistake'?"), it picks the one closest to its scenario and says it;
* if the agent asks a question, it answers with the sentences of its
  scenario (what it knows, its reason for calling, its instructions) that
  share a word with the question, and with all it knows of itself when the
  question is about its identity (name, email, zip, ids);
* if the agent asks for details (name, email, zip, ids, ...), it gives the
  facts the scenario says it knows;
* otherwise it restates its reason for calling.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

from taugym.backends.base import TaskSpec
from taugym.users.base import SimulatedUser, UserDevice

_CONFIRM = re.compile(
    r"\b(confirm|proceed|yes or no|yes/no|shall i|should i|would you like me to|do you want me to|go ahead|is that correct|is this correct)\b",
    re.IGNORECASE,
)
_ASK_DETAILS = re.compile(
    r"\b(email|zip|name|user id|user_id|order id|reservation|address|provide|verify|identity|authenticate|which|what is)\b",
    re.IGNORECASE,
)
_CLOSING = re.compile(r"\b(anything else|have a (great|nice|good) (day|trip|one)|goodbye|bye)\b", re.IGNORECASE)
_TRANSFER = re.compile(r"\btransferr?(ed|ing)?\b.*\b(human|agent|representative)\b", re.IGNORECASE)

_OPENINGS = ("Hi. {reason}", "Hello! {reason}", "Hi there. {reason}")


class ScriptedUser(SimulatedUser):
    """A deterministic, seedable offline user (see the module docstring)."""

    def __init__(self, patience: int = 30):
        self.patience = patience
        self._task: TaskSpec | None = None
        self._rng = random.Random(0)
        self._agent_messages: list[str] = []
        self._gave_details = False
        self._opened = False
        self._device: UserDevice | None = None

    def begin(self, task: TaskSpec, seed: int, history: Sequence[dict] = (), device: UserDevice | None = None) -> None:
        self._task = task
        self._rng = random.Random(seed)
        self._agent_messages = []
        self._gave_details = False
        self._opened = any(message["role"] == "user" for message in history)
        self._device = device if device is not None and device.schemas else None

    def respond(self, agent_message: str) -> str:
        if self._task is None:
            raise RuntimeError("ScriptedUser.respond called before begin(); the env calls begin at reset")
        if not self._opened:
            self._opened = True
            reason = _first_person(self._task.reason_for_call) or "I need some help with my account."
            return self._rng.choice(_OPENINGS).format(reason=reason)
        previous = self._agent_messages[-1] if self._agent_messages else None
        self._agent_messages.append(agent_message)
        if _TRANSFER.search(agent_message):
            return "###TRANSFER###"
        device_reply = self._use_device(agent_message)
        if device_reply is not None:
            return device_reply
        if _CLOSING.search(agent_message) or len(self._agent_messages) > self.patience:
            return "No, that's all. Thank you! ###STOP###"
        choice = self._choose(agent_message)  # a choice asked again (another order) is not a stall
        if choice is not None:
            return choice
        if agent_message == previous:
            return "No, that's all. Thank you! ###STOP###"
        if _CONFIRM.search(agent_message):
            return "Yes, please go ahead."
        answer = self._answer(agent_message)
        if answer is not None:
            return answer
        if _ASK_DETAILS.search(agent_message) and self._task.known_info:
            self._gave_details = True
            return _first_person(self._task.known_info)
        if not self._gave_details and self._task.known_info:
            self._gave_details = True
            return _first_person(self._task.known_info)
        return "Could you help me with that? " + _first_person(self._task.reason_for_call)

    def _scenario_sentences(self) -> list[str]:
        task = self._task
        parts = (task.known_info, task.reason_for_call, task.task_instructions)
        return [
            sentence for part in parts for sentence in re.split(r"(?<=[.!?])\s+", " ".join(part.split())) if sentence
        ]

    def _choose(self, agent_message: str) -> str | None:
        """The quoted option closest to the scenario, when the agent offers two or more."""
        options = re.findall(r"'([^']+)'", agent_message)
        if "?" not in agent_message or len(options) < 2:
            return None
        scenario = _content_words(" ".join(self._scenario_sentences()))
        best = max(options, key=lambda option: len(_content_words(option) & scenario))
        return f"'{best}', please."

    def _answer(self, agent_message: str) -> str | None:
        """The scenario's sentences about what the agent asks, or None when none is."""
        if "?" not in agent_message:
            return None
        asked = _content_words(agent_message)
        matching = [sentence for sentence in self._scenario_sentences() if _content_words(sentence) & asked]
        if _ASK_DETAILS.search(agent_message) and self._task.known_info:  # identification: all it knows
            known = set(re.split(r"(?<=[.!?])\s+", " ".join(self._task.known_info.split())))
            matching = [s for s in self._scenario_sentences() if s in known] + [s for s in matching if s not in known]
        if not matching:
            return None
        self._gave_details = True
        return " ".join(_first_person(sentence) for sentence in matching)

    def _use_device(self, agent_message: str) -> str | None:
        """Run the device tools the agent asked for; None when it asked for none."""
        if self._device is None:
            return None
        requests = _tool_requests(agent_message, self._device.schemas)
        if not requests:
            return None
        reports = []
        for name, arguments in requests:
            reports.append(f"{name}: {self._device.call(name, arguments)}")
        return "I did that on my phone. " + " ".join(reports)


def _tool_requests(message: str, schemas: list[dict]) -> list[tuple[str, dict]]:
    """The user tools a message names, in order, each with the JSON object that follows it."""
    found = []
    for schema in schemas:
        name = schema["function"]["name"]
        spaced = name.replace("_", " ")
        for match in re.finditer(rf"\b(?:{re.escape(name)}|{re.escape(spaced)})\b", message, re.IGNORECASE):
            found.append((match.start(), match.end(), name))
    found.sort(key=lambda item: (item[0], -(item[1] - item[0])))
    requests, end_of_last = [], -1
    for start, end, name in found:
        if start < end_of_last:
            continue  # inside a longer name (toggle data / toggle data saver mode)
        end_of_last = end
        requests.append((end, name))
    calls = []
    for position, (end, name) in enumerate(requests):
        stop = requests[position + 1][0] if position + 1 < len(requests) else len(message)
        calls.append((name, _json_object_in(message[end:stop])))
    return calls


def _json_object_in(text: str) -> dict:
    """The first JSON object in ``text`` ({} when there is none)."""
    brace = text.find("{")
    if brace < 0:
        return {}
    try:
        value, _ = json.JSONDecoder().raw_decode(text[brace:])
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


_STOPWORDS = frozenset(
    "a an and are as at be by can could do for from have help how i if in is it me my of on or our please "
    "should so tell that the then this to us was we what when which will with would you your yours".split()
)


def _content_words(text: str) -> set[str]:
    """The words of ``text`` that carry meaning (lower case, no stop words)."""
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if len(word) > 1 and word not in _STOPWORDS}


_SUBJECT_FOLLOWERS = (
    "want|wants|wish|are|were|have|had|would|will|can|could|do|did|don't|didn't|need|prefer|received|"
    "ordered|bought|recently|also|just|only|think|know|remember|like|live|plan|may|might|should|must|"
    "forgot|lost|booked|made|reserved|paid|changed|moved|then|still|already|never|always|get|got|"
    "agree|accept|insist|refuse|request|decide|expect|hope|travel|fly|is|was"
)


def _first_person(text: str) -> str:
    """Scenario text speaks to the user ("You are Yusuf ..."); the user speaks as "I".

    "you" becomes "I" before a verb ("you want" -> "I want") and "me"
    elsewhere ("saves you money" -> "saves me money").
    """
    text = " ".join(text.split())
    replacements = (
        (r"\bYou are\b", "I am"),
        (r"\byou are\b", "I am"),
        (r"\bYou're\b", "I'm"),
        (r"\byou're\b", "I'm"),
        (r"\byourself\b", "myself"),
        (r"\bYours\b", "Mine"),
        (r"\byours\b", "mine"),
        (r"\bYour\b", "My"),
        (r"\byour\b", "my"),
        (rf"\b[Yy]ou\b(?=\s+(?:{_SUBJECT_FOLLOWERS})\b)", "I"),
        (r"(?<=\w )you\b", "me"),
        (r"\b[Yy]ou\b", "I"),
    )
    for pattern, repl in replacements:
        text = re.sub(pattern, repl, text)
    return text
