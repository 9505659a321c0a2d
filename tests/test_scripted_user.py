"""The offline scripted user: deterministic, built from the task's own scenario."""

from __future__ import annotations

from taugym import TauEnv
from taugym.users import ScriptedUser


def _task():
    return TauEnv(user_strategy="scripted").domain.tasks[0]  # Yusuf Rossi, zip 19122, exchange


def test_same_seed_same_conversation_and_it_speaks_in_the_first_person():
    task = _task()
    first = [ScriptedUser().start(task, "Hi! How can I help you today?", seed=3) for _ in range(2)]
    assert first[0] == first[1]
    assert "#W2378156" in first[0] and " you " not in first[0].lower()


def test_it_answers_from_the_scenario_confirms_and_ends():
    user = ScriptedUser()
    task = _task()
    user.start(task, "Hi! How can I help you today?", seed=0)
    assert "Yusuf Rossi" in user.respond("Could you give me your name and zip code?")
    assert user.respond("Shall I proceed with the exchange? Please confirm (yes/no).").startswith("Yes")
    assert "###STOP###" in user.respond("Done! Is there anything else I can help you with?")


def test_it_ends_when_transferred_or_when_the_agent_stalls():
    user = ScriptedUser(patience=3)
    task = _task()
    user.start(task, "", seed=0)
    assert user.respond("I am transferring you to a human agent now.") == "###TRANSFER###"
    user.start(task, "", seed=0)
    user.respond("Hmm.")
    assert "###STOP###" in user.respond("Hmm.")  # the same message twice: a stalled agent
