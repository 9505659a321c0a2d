"""User simulators of the stand-in: v1's strategies, none of which may run in tests."""

import enum
from typing import Optional, Union


def completion(**kwargs):
    """Where v1 calls the model (litellm). The stand-in has no model."""
    raise RuntimeError("tau_bench stand-in: a user simulator tried to call an LLM")


class BaseUserSimulationEnv:
    def reset(self, instruction: Optional[str] = None) -> str:
        raise NotImplementedError

    def step(self, content: str) -> str:
        raise NotImplementedError

    def get_total_cost(self) -> float:
        raise NotImplementedError


class HumanUserSimulationEnv(BaseUserSimulationEnv):
    """Reads the user's lines from the terminal (v1's ``human`` strategy)."""

    def reset(self, instruction: Optional[str] = None) -> str:
        return input(f"{instruction}\n")

    def step(self, content: str) -> str:
        return input(f"{content}\n")

    def get_total_cost(self) -> float:
        return 0


class LLMUserSimulationEnv(BaseUserSimulationEnv):
    """Like v1's LLM user, it asks the model for a first message as soon as it is built."""

    def __init__(self, model: str, provider: str) -> None:
        self.model, self.provider = model, provider
        self.messages: list = []
        self.reset()

    def build_system_prompt(self, instruction: Optional[str]) -> str:
        shown = f"\n\nInstruction: {instruction}\n" if instruction is not None else ""
        return f"You are a customer of the stand-in shop.{shown}\nEnd with '###STOP###' when done."

    def reset(self, instruction: Optional[str] = None) -> str:
        self.messages = [{"role": "system", "content": self.build_system_prompt(instruction)}]
        return completion(model=self.model, messages=self.messages)

    def step(self, content: str) -> str:
        self.messages.append({"role": "user", "content": content})
        return completion(model=self.model, messages=self.messages)

    def get_total_cost(self) -> float:
        return 0.0


class UserStrategy(enum.Enum):
    HUMAN = "human"
    LLM = "llm"
    REACT = "react"
    VERIFY = "verify"
    REFLECTION = "reflection"


def load_user(
    user_strategy: Union[str, UserStrategy],
    model: Optional[str] = "gpt-4o",
    provider: Optional[str] = None,
) -> BaseUserSimulationEnv:
    strategy = UserStrategy(user_strategy) if isinstance(user_strategy, str) else user_strategy
    if strategy == UserStrategy.HUMAN:
        return HumanUserSimulationEnv()
    if model is None or provider is None:
        raise ValueError(f"the {strategy.value} user strategy needs a model and a provider")
    return LLMUserSimulationEnv(model=model, provider=provider)
