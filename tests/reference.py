"""What TauGym's rewards are checked against, shared by the tests and
``tests/bench/check_domains.py``: tau2's own scoring, and the reference plays
(oracle, do-nothing, random, broken oracle)."""

from __future__ import annotations

from taugym.agents import OraclePolicy, RandomPolicy


class DoNothing(OraclePolicy):
    """Ends the conversation at once."""

    def plan(self, task, info=None):
        return ["[finish]"]


class BrokenOracle(OraclePolicy):
    """The oracle without the task's last gold action."""

    def plan(self, task, info=None):
        return super().plan({**task, "gold_actions": task["gold_actions"][:-1]}, info)


POLICIES = {
    "oracle": OraclePolicy,
    "do-nothing": DoNothing,
    "random": lambda: RandomPolicy(seed=11),
    "broken-oracle": BrokenOracle,
}


_TAU2_TERMINATION = {
    "agent": "agent_stop",
    "user": "user_stop",
    "max_steps": "max_steps",
    "max_errors": "too_many_errors",
}


def tau2_reward(env, termination: str = "agent") -> float:
    """tau2's own reward for the trajectory the env just recorded."""
    return tau2_evaluation(env, termination).reward


def tau2_evaluation(env, termination: str = "agent"):
    """tau2's own ``evaluate_simulation`` (its ``RewardInfo``) on the trajectory the env just recorded."""
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

    return evaluate_simulation(tau2_run(env, termination), env.session.task, EvaluationType.ALL, False, env.domain.name)


def tau2_run(env, termination: str = "agent"):
    """The trajectory the env just recorded, as tau2's ``SimulationRun``."""
    from tau2.data_model.simulation import SimulationRun, TerminationReason

    return SimulationRun(
        id="check",
        task_id=env.session.task.id,
        start_time="",
        end_time="",
        duration=0.0,
        termination_reason=TerminationReason(_TAU2_TERMINATION[termination]),
        messages=env.session.messages,
    )


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
        id="gold",
        task_id=task.id,
        start_time="",
        end_time="",
        duration=0.0,
        termination_reason=TerminationReason.AGENT_STOP,
        messages=messages,
    )
    return evaluate_simulation(run, task, EvaluationType.ALL, False, domain.name).reward
