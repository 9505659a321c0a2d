"""Shared fixtures: envs on the real tau2 backend with the offline scripted user."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# the tests' local Ray clusters talk over loopback only (read by ray at import)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

from taugym import TauEnv


def run_episode(env, policy, task_id=None, seed=None):
    """Play one episode; return (final reward, final info, steps)."""
    options = {"task_id": task_id} if task_id else None
    observation, info = env.reset(seed=seed, options=options)
    steps, done, reward = 0, False, 0.0
    while not done:
        observation, reward, terminated, truncated, info = env.step(policy.act(observation, info))
        steps += 1
        done = terminated or truncated
    return reward, info, steps


@pytest.fixture(scope="session")
def retail_env():
    return TauEnv(task_category="retail", user_strategy="scripted")


@pytest.fixture(scope="session")
def airline_env():
    return TauEnv(task_category="airline", user_strategy="scripted")


_TAU2_TERMINATION = {"agent": "agent_stop", "user": "user_stop", "max_steps": "max_steps", "max_errors": "too_many_errors"}


def tau2_reward(env, termination: str = "agent") -> float:
    """tau2's own ``evaluate_simulation`` on the trajectory the env just recorded."""
    from tau2.data_model.simulation import SimulationRun, TerminationReason
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

    session = env.session
    run = SimulationRun(
        id="check", task_id=session.task.id, start_time="", end_time="", duration=0.0,
        termination_reason=TerminationReason(_TAU2_TERMINATION[termination]), messages=session.messages,
    )
    return evaluate_simulation(run, session.task, EvaluationType.ALL, False, env.domain.name).reward


def tau2_gold_replay_reward(domain, task_id: str) -> float:
    """tau2's reward for the task's own gold actions (user actions included), replayed by
    tau2's environment and scored by ``evaluate_simulation``: what a perfect agent earns."""
    from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage
    from tau2.data_model.simulation import SimulationRun, TerminationReason
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.registry import registry

    task = domain.native_task(int(task_id.rsplit("-", 1)[1]))
    environment = registry.get_env_constructor(domain.name)()
    state = task.initial_state
    history = list((state.message_history or []) if state else [])
    if state is not None:
        environment.set_state(state.initialization_data, state.initialization_actions, history)
    messages = list(history)
    criteria = task.evaluation_criteria
    for number, action in enumerate((criteria.actions or []) if criteria else []):
        call = ToolCall(id=f"gold_{number}", name=action.name, arguments=action.arguments, requestor=action.requestor)
        kind = UserMessage if action.requestor == "user" else AssistantMessage
        messages.append(kind(role=action.requestor, content=None, tool_calls=[call]))
        messages.append(environment.get_response(call))
    if criteria is not None and criteria.communicate_info:
        messages.append(AssistantMessage(role="assistant", content=" ".join(criteria.communicate_info)))
    run = SimulationRun(
        id="gold", task_id=task.id, start_time="", end_time="", duration=0.0,
        termination_reason=TerminationReason.AGENT_STOP, messages=messages,
    )
    return evaluate_simulation(run, task, EvaluationType.ALL, False, domain.name).reward
