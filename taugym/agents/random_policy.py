"""RandomPolicy: well-formed actions drawn at random. A floor, not an agent."""

from __future__ import annotations

import json
import random
from typing import Any

from taugym.agents.base import Policy

_WORDS = ("order", "user", "flight", "cancel", "hello", "please", "refund", "help", "123", "#W0000001")


class RandomPolicy(Policy):
    """Each step: a search, a message, a call of a random tool with arguments of the
    right JSON types, or (with probability ``finish_probability``) ``[finish]``.
    Seeded, so a run is reproducible."""

    name = "random"

    def __init__(self, seed: int = 0, finish_probability: float = 0.05):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if (
            isinstance(finish_probability, bool)
            or not isinstance(finish_probability, (int, float))
            or not 0.0 <= finish_probability <= 1.0
        ):
            raise ValueError(f"finish_probability must be a number between 0 and 1, got {finish_probability!r}")
        self.rng = random.Random(seed)
        self.finish_probability = finish_probability

    def _value(self, spec: dict) -> Any:
        kind = spec.get("type") or next(
            (o.get("type") for o in spec.get("anyOf", []) if o.get("type") != "null"), "string"
        )
        if kind == "integer":
            return self.rng.randint(0, 10)
        if kind == "number":
            return round(self.rng.uniform(0, 1000), 2)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "array":
            return [self._value(spec.get("items") or {}) for _ in range(self.rng.randint(0, 2))]
        if kind == "object":
            return {}
        return self.rng.choice(_WORDS)

    def act(self, observation: dict, info: dict) -> str:
        roll = self.rng.random()
        if roll < self.finish_probability:
            return "[finish]"
        if roll < 0.2:
            return "[search] " + self.rng.choice(("tools", "help", "order", "flight"))
        if roll < 0.45:
            return "[action] " + " ".join(self.rng.choice(_WORDS) for _ in range(4))
        schema = self.rng.choice(info["tools"])["function"]
        properties = (schema.get("parameters") or {}).get("properties") or {}
        arguments = {name: self._value(spec) for name, spec in properties.items()}
        return "[answer] " + json.dumps({"name": schema["name"], "arguments": arguments})
