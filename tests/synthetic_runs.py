"""Synthetic rollout datasets with the shape of real ones, written with rollout.dataset's writer.

A run here has what a real LLM run has and the offline default run lacks:
mixed rewards (flaky tasks), errored episodes with causes, failed checks of
every kind in tau2's ``RewardInfo`` (database hash, communicate item,
environment assertion), several terminations and LLM accounting. Each
episode's conversation looks like a retail support chat: a long system
prompt and tool list shared by the domain, tool calls with JSON arguments,
tool results of order and product records (the same record for the same
arguments, as a real database gives), and prose turns.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from rollout.dataset import ParquetEpisodeWriter, step_row
from rollout.summary import summarize

WORDS = (
    "order item refund exchange return address payment gift card credit card delivered pending processed shipped "
    "please confirm the following details would you like me to proceed with this request thank you for your patience "
    "I can help with that let me look up your account the total amount is and the new item will be sent to your "
    "default address once the exchange is processed you will receive an email with the tracking number"
).split()
TOOLS = (
    "get_user_details",
    "get_order_details",
    "get_product_details",
    "find_user_id_by_email",
    "list_all_product_types",
)
ERROR_CAUSES = (
    "user: LLMCallError: the provider failed after 6 attempts: 503 Service Unavailable",
    "agent: RateLimitError: 429 rate limit reached for requests",
    "actor: ActorDiedError: the actor died unexpectedly before finishing this task",
)


def _sentence(rng: random.Random, low: int = 8, high: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def _system_prompt(domain: str) -> str:
    rng = random.Random(f"policy-{domain}")
    paragraphs = ["\n".join(f"- {_sentence(rng, 10, 30)}" for _ in range(6)) for _ in range(12)]
    return f"# {domain.title()} agent policy\n\n" + "\n\n".join(paragraphs)


def _tools(domain: str) -> str:
    rng = random.Random(f"tools-{domain}")
    schemas = []
    for name in TOOLS + tuple(
        f"{verb}_{noun}" for verb in ("cancel", "modify", "return") for noun in ("order", "items", "address")
    ):
        schemas.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": _sentence(rng, 15, 40),
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "order_id": {"type": "string", "description": _sentence(rng, 5, 12)},
                            "item_ids": {"type": "array", "items": {"type": "string"}},
                        },
                        "required": ["order_id"],
                    },
                },
            }
        )
    return json.dumps(schemas)


def _record(kind: str, key: str) -> str:
    """The tool result for ``kind``(``key``): the same text for the same arguments, as a database gives."""
    rng = random.Random(f"{kind}-{key}")
    if kind == "get_product_details":
        variants = {
            str(rng.randint(10**9, 10**10)): {
                "item_id": str(rng.randint(10**9, 10**10)),
                "options": {
                    "color": rng.choice(["red", "blue", "black", "white"]),
                    "size": rng.choice(["S", "M", "L", "XL"]),
                    "material": rng.choice(["cotton", "polyester", "wool"]),
                },
                "available": rng.random() < 0.7,
                "price": round(rng.uniform(10, 500), 2),
            }
            for _ in range(rng.randint(4, 14))
        }
        return json.dumps(
            {
                "name": rng.choice(["T-Shirt", "Laptop", "Water Bottle", "Desk Lamp"]),
                "product_id": key,
                "variants": variants,
            }
        )
    items = [
        {
            "name": rng.choice(["T-Shirt", "Laptop", "Water Bottle", "Desk Lamp", "Backpack"]),
            "product_id": str(rng.randint(10**9, 10**10)),
            "item_id": str(rng.randint(10**9, 10**10)),
            "price": round(rng.uniform(10, 500), 2),
            "options": {"color": rng.choice(["red", "blue"]), "size": rng.choice(["S", "M", "L"])},
        }
        for _ in range(rng.randint(1, 5))
    ]
    return json.dumps(
        {
            "order_id": key,
            "user_id": f"user_{rng.randint(1000, 9999)}",
            "address": {
                "address1": f"{rng.randint(1, 999)} Main Street",
                "city": "Springfield",
                "zip": str(rng.randint(10000, 99999)),
            },
            "items": items,
            "status": rng.choice(["delivered", "pending", "processed"]),
            "payment_history": [
                {
                    "transaction_type": "payment",
                    "amount": round(sum(i["price"] for i in items), 2),
                    "payment_method_id": f"credit_card_{rng.randint(10**6, 10**7)}",
                }
            ],
        }
    )


def synthetic_episode(
    run_id: str, domain: str, task: int, trial: int, seed: int, agent: str = "llm"
) -> tuple[dict, list[dict]]:
    """One episode row (EPISODE_SCHEMA) and its step rows."""
    rng = random.Random(f"{run_id}-{domain}-{task}-{trial}-{seed}")
    scenario = random.Random(f"{domain}-{task}")  # the task: the same orders and wishes in every trial
    orders = [f"#W{scenario.randint(10**6, 10**7)}" for _ in range(scenario.randint(1, 3))]
    difficulty = scenario.random()
    task_id = f"{domain}-{task:03d}"
    messages = [
        {"role": "system", "content": _system_prompt(domain)},
        {"role": "assistant", "content": "Hi! How can I help you today?"},
        {"role": "user", "content": f"Hi, I want to exchange an item of order {orders[0]}. " + _sentence(scenario)},
    ]
    steps = 0
    for turn in range(rng.randint(3, 9)):
        name = rng.choice(TOOLS[:3])
        key = rng.choice(orders) if name != "get_product_details" else str(scenario.randint(10**9, 10**10))
        call_id = f"call_{turn}_{rng.randint(0, 10**6)}"
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": name,
                            "arguments": json.dumps(
                                {"order_id" if name != "get_product_details" else "product_id": key}
                            ),
                        },
                    }
                ],
            }
        )
        messages.append({"role": "tool", "content": _record(name, key), "tool_call_id": call_id, "name": name})
        messages.append({"role": "assistant", "content": _sentence(rng)})
        messages.append({"role": "user", "content": _sentence(rng, 4, 20)})
        steps += 2
    error = rng.random() < 0.04
    success = not error and rng.random() > difficulty
    db_ok = success or rng.random() < 0.5
    communicate = [
        {
            "info": f"{scenario.randint(10, 999)}.{scenario.randint(10, 99)}",
            "met": success or rng.random() < 0.5,
            "justification": "found in an agent message",
        }
        for _ in range(scenario.randint(0, 2))
    ]
    if not success and db_ok and all(c["met"] for c in communicate):
        db_ok = False  # a failure always has a failed check
    breakdown = (
        None
        if error
        else {
            "reward": 1.0 if success else 0.0,
            "db_check": {"db_match": db_ok, "db_reward": 1.0 if db_ok else 0.0},
            "env_assertions": [
                {
                    "env_assertion": {
                        "env_type": "assistant",
                        "func_name": "assert_order_status",
                        "arguments": {"order_id": orders[0], "status": "exchange requested"},
                    },
                    "met": db_ok,
                    "reward": 1.0 if db_ok else 0.0,
                }
            ]
            if task % 5 == 0
            else [],
            "action_checks": [
                {
                    "action": {
                        "action_id": f"{task}_0",
                        "requestor": "assistant",
                        "name": "exchange_delivered_order_items",
                        "arguments": {"order_id": orders[0], "item_ids": ["1234567890"]},
                    },
                    "action_match": db_ok,
                    "action_reward": 1.0 if db_ok else 0.0,
                }
            ],
            "communicate_checks": communicate,
            "nl_assertions": None,
            "reward_basis": ["DB", "COMMUNICATE"] + (["ENV_ASSERTION"] if task % 5 == 0 else []),
            "reward_breakdown": {
                "DB": 1.0 if db_ok else 0.0,
                **({"ENV_ASSERTION": 1.0 if db_ok else 0.0} if task % 5 == 0 else {}),
                **({"COMMUNICATE": 1.0 if all(c["met"] for c in communicate) else 0.0} if communicate else {}),
            },
            "info": None,
        }
    )
    termination = "error" if error else rng.choice(["agent"] * 6 + ["user"] * 3 + ["max_steps"])
    if termination == "max_steps" and breakdown:
        breakdown.update(
            reward=0.0,
            note="Simulation terminated prematurely (max steps): the benchmark scores it 0",
            reward_if_ended=1.0 if success else 0.0,
        )
        success = False
    prompt_tokens = rng.randint(20_000, 120_000)
    completion_tokens = rng.randint(300, 3_000)
    row = {
        "run_id": run_id,
        "episode_id": f"{run_id}:{task_id}:{trial}:{seed}",
        "backend": "tau2",
        "domain": domain,
        "task_id": task_id,
        "trial": trial,
        "seed": seed,
        "agent": agent,
        "agent_model": "gpt-4o-mini",
        "user_model": "gpt-4o",
        "user_strategy": "llm",
        "reward": None if error else (1.0 if success else 0.0),
        "reward_breakdown": json.dumps(breakdown),
        "terminated": termination != "max_steps",
        "truncated": termination == "max_steps",
        "error": error,
        "error_cause": rng.choice(ERROR_CAUSES) if error else None,
        "termination": termination,
        "num_steps": steps,
        "messages": messages,
        "tools": _tools(domain),
        "llm_calls": steps + rng.randint(2, 8),
        "llm_retries": rng.randint(0, 2) if rng.random() < 0.1 else 0,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": round(prompt_tokens * 0.15e-6 + completion_tokens * 0.6e-6, 6),
        "duration_s": round(rng.uniform(5, 90), 3),
        "taugym_version": "0.1.0",
        "source_format": None,
        "source_file": None,
        "source_position": None,
    }
    step_rows = [
        step_row(
            row,
            step_index=i,
            observation="",
            action="[search] tools",
            reward=0.0,
            next_observation="",
            terminated=i == steps - 1,
            truncated=False,
            prompt=messages[:1],
            completion=[{"role": "assistant", "content": "[search] tools"}],
        )
        for i in range(steps)
    ]
    return row, step_rows


def write_synthetic_run(
    out: Path, domains: dict[str, int], trials: int, run_id: str = "synthetic", seed: int = 0, agent: str = "llm"
) -> dict:
    """Write ``trials`` episodes of ``domains[d]`` tasks per domain to ``out``, and ``summary.json``; return the summary."""
    out = Path(out)
    with ParquetEpisodeWriter(out, run_id=run_id, max_rows_per_file=2048) as writer:
        for domain, tasks in domains.items():
            for task in range(tasks):
                for trial in range(trials):
                    writer.write(
                        *synthetic_episode(run_id, domain, task, trial, seed * 1_000_003 + task * 101 + trial, agent)
                    )
    summary = summarize(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
