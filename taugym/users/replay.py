"""ReplayUser: a user that answers with the recorded user turns of a trajectory, in order.

It replays a conversation someone already had (a tau-bench v1 or tau2
results file, see ``taugym rescore``) without an LLM call. Load the record
with :meth:`ReplayUser.load` before ``reset``: ``user_turns`` are the user's
messages in order (the first answers the agent's greeting, or opens the
conversation where the backend has no greeting), ``agent_turns`` the agent's
text message each user turn answered (``None`` where there was none, as
before v1's opening turn).

Where the agent's message differs from the recorded one, the user still
answers with the recorded turn and notes the divergence; the env reports
the notes in ``info["user_notes"]``. When the recorded turns run out, it
ends the conversation with ``###STOP###`` and notes that too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taugym.backends.base import TaskSpec
from taugym.users.base import SimulatedUser, UserDevice

OUT_OF_TURNS = "###STOP###"
"""What the user says once the recorded turns are all used."""


class ReplayUser(SimulatedUser):
    """Answers with recorded user turns (see the module docstring)."""

    def __init__(self) -> None:
        self._user_turns: list[str] = []
        self._agent_turns: list[str | None] = []
        self._position = 0
        self._notes: list[str] = []

    def load(self, user_turns: Sequence[str], agent_turns: Sequence[str | None] | None = None) -> None:
        """The record to replay from the next ``begin`` on."""
        self._user_turns = [str(turn) for turn in user_turns]
        self._agent_turns = list(agent_turns) if agent_turns is not None else [None] * len(self._user_turns)
        if len(self._agent_turns) != len(self._user_turns):
            raise ValueError(
                f"agent_turns must pair with user_turns: got {len(self._agent_turns)} and {len(self._user_turns)}"
            )

    def begin(self, task: TaskSpec, seed: int, history: Sequence[dict] = (), device: UserDevice | None = None) -> None:
        self._position = 0
        self._notes = []

    def respond(self, agent_message: str) -> str:
        index = self._position
        if index >= len(self._user_turns):
            self._notes.append(f"user turn {index}: the record has no more user turns; the user ends the conversation")
            return OUT_OF_TURNS
        expected = self._agent_turns[index]
        if expected is not None and agent_message.strip() != expected.strip():
            self._notes.append(
                f"user turn {index}: the agent said {agent_message[:120]!r}, the record has {expected[:120]!r}"
            )
        self._position += 1
        return self._user_turns[index]

    def notes(self) -> list[str]:
        """Where the conversation left the record, in order (empty when it followed it)."""
        return list(self._notes)

    def usage(self) -> dict[str, Any]:
        return {}
