"""The rollout dataset: one Parquet schema, its writer and its readers.

Finished trajectories go to two Parquet datasets under an output folder ``DIR``::

    DIR/episodes/retail/part-<run_id>-<writer_id>-<seq>.parquet   one row per episode
    DIR/steps/retail/part-<run_id>-<writer_id>-<seq>.parquet      one row per env step
    DIR/README.md                                                  the dataset card (:mod:`rollout.summary`)

One folder per domain, and the ``domain`` column in every file: readers that
know nothing of folders (Hugging Face ``datasets``) have it, and no reader
sees it twice (folders are not ``domain=…``: a hive column beside the file's
own makes pandas refuse to merge the two). An episodes file and the steps
file with the same name are a pair: the steps of every episode in the one
are in the other. :data:`SCHEMA_VERSION` is in each file's metadata; the
readers here refuse files of another version with a message saying how to
read them.

Columns
-------
:data:`EPISODE_SCHEMA` and :data:`STEP_SCHEMA` give each column's type.
Tool-call ``arguments``, ``tools`` (the OpenAI tool schemas) and
``reward_breakdown`` (the backend's own ``info["evaluation"]``, null when
there was none) are :data:`JSON`: Arrow's canonical ``arrow.json`` type over
text (Parquet's JSON logical type). Hugging Face ``datasets`` (>= 5.2)
decodes them to dicts and lists, so TRL's chat templates get argument
*objects*; pyarrow, pandas, polars and Ray Data give the text. Not Arrow
structs: tools differ in their argument keys, and one struct would give
every call every tool's keys, null for the rest.

An episode's ``reward`` is null for an errored episode; ``termination`` is
``agent``, ``user``, ``max_steps``, ``max_errors``, ``context_length`` or
``error``. ``source_format`` (``tau-bench-v1`` or ``tau2``),
``source_file`` and ``source_position`` (the record's index in the file)
say where a row imported with ``taugym import`` came from (null for
TauGym's own runs; ``reward`` is then the reward the file recorded).
``messages`` is the conversation in OpenAI / Hugging Face chat format,
system prompt first: ``{role, content, tool_calls, tool_call_id, name}``
with ``content`` null for an assistant turn that only calls tools. An
episode the agent ended ends with the assistant turn ``"[finish]"``; one the
user ended, with the user's turn.

A step row is one action, keyed like its episode: ``step_index`` (0 for the
first), ``observation``/``next_observation`` (the env's ``obs["feedback"]``
before and after), ``action`` (the string sent), and, for prompt-completion
training (TRL), ``prompt`` (the conversation the agent acted on: a Markov
observation), ``completion`` (one assistant message: the turn the action
added, or the action's text for one that added none, such as ``[finish]``)
and ``tools``; ``completion_token_ids``/``completion_logprobs`` are the
behaviour policy's sampled tokens where its server returned them. The
history repeats from step to step; Parquet's dictionary encoding and zstd
keep the files small (``make bench`` prints bytes per step).

Publishing protocol
-------------------
One protocol for every ``pyarrow.fs`` filesystem (local disk today, object
storage by adding its filesystem: it needs no atomic rename and no lock,
see :mod:`rollout.store`):

1. A file pair is written whole under staged names that plain readers skip
   (``.part-….parquet.tmp`` in its final folder: names starting with ``.``).
2. The commit: one small JSON record ``DIR/_manifest/<set>.json``, written
   whole, lists the pairs the set adds (and, for ``--retry-errors``, the
   pairs it removes). The records together say what is published;
   :func:`read_episodes`, :func:`read_steps` and :func:`completed_keys`
   read only what they name.
3. The staged files are moved to their final names, steps before episodes
   (removed pairs are deleted first, episodes before steps).

So every file a plain reader sees belongs to exactly one committed set, and
an episode row is never visible without its steps. A crash before the
commit leaves only staged files (removed by the next writer); a crash after
it leaves a committed set whose moves the next writer finishes. A crash
loses only the rows not yet committed (see :class:`ParquetEpisodeWriter`);
they are absent from :func:`completed_keys`, so ``--resume`` runs them
again. The writer owns the folder (:class:`~rollout.store.OutputLease`).

An error row is the one kind of row that may be replaced: ``--retry-errors``
runs its (domain, task, trial) again under a new ``episode_id``
(``…:retry-<time>``), and the commit that publishes the new row rewrites
the pair that held the error row without it (and its steps), listing the
old pair as removed. Every reader sees each (domain, task, trial) once.

No row holds secrets: the rows carry the conversation, tool schemas,
scores and counters only, and :func:`episode_row_from_info` masks secrets
in ``error_cause`` with :func:`taugym.llm.scrub_secrets`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from rollout.store import OutputLease, Store
from taugym.llm import scrub_secrets

__all__ = [
    "EPISODE_SCHEMA",
    "STEP_SCHEMA",
    "MESSAGE_TYPE",
    "RLLIB_INPUT_READ_SCHEMA",
    "SCHEMA_VERSION",
    "ParquetEpisodeWriter",
    "episode_row_from_info",
    "step_row",
    "read_episodes",
    "read_steps",
    "completed_keys",
    "error_rows",
    "published_files",
    "checked_table",
    "episode_tables",
    "column_names",
    "JSON",
]

PathLike = str | os.PathLike

#: Bumped whenever a column is added, removed or changes type. Stored in each
#: file's schema metadata under ``taugym.dataset_schema_version``.
SCHEMA_VERSION = 2

MANIFEST_DIR = "_manifest"
EPISODES_DIR = "episodes"
STEPS_DIR = "steps"

#: A JSON value stored as its text: Arrow's ``arrow.json`` type (see "Columns" above).
JSON = pa.json_()


def _f(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


_TOOL_CALL_TYPE = pa.struct(
    [
        _f("id", pa.string()),
        _f("type", pa.string()),
        _f("function", pa.struct([_f("name", pa.string()), _f("arguments", JSON)])),
    ]
)

#: One chat message: OpenAI / Hugging Face conversational format.
MESSAGE_TYPE = pa.struct(
    [
        pa.field("role", pa.string(), nullable=False),
        pa.field("content", pa.string()),
        pa.field("tool_calls", pa.list_(_TOOL_CALL_TYPE)),
        pa.field("tool_call_id", pa.string()),
        pa.field("name", pa.string()),
    ]
)


#: One row per finished episode (see the module docstring for each column).
EPISODE_SCHEMA = pa.schema(
    [
        _f("run_id", pa.string()),
        _f("episode_id", pa.string()),
        _f("backend", pa.string()),
        _f("domain", pa.string()),
        _f("task_id", pa.string()),
        _f("trial", pa.int32()),
        _f("seed", pa.int64()),
        _f("agent", pa.string()),
        _f("agent_model", pa.string(), True),
        _f("user_model", pa.string(), True),
        _f("user_strategy", pa.string()),
        _f("reward", pa.float64(), True),
        _f("reward_breakdown", JSON),
        _f("terminated", pa.bool_()),
        _f("truncated", pa.bool_()),
        _f("error", pa.bool_()),
        _f("error_cause", pa.string(), True),
        _f("termination", pa.string()),
        _f("num_steps", pa.int32()),
        _f("messages", pa.list_(MESSAGE_TYPE)),
        _f("tools", JSON),
        _f("llm_calls", pa.int64()),
        _f("llm_retries", pa.int64()),
        _f("prompt_tokens", pa.int64()),
        _f("completion_tokens", pa.int64()),
        _f("cost_usd", pa.float64()),
        _f("duration_s", pa.float64()),
        _f("taugym_version", pa.string()),
        _f("source_format", pa.string(), True),
        _f("source_file", pa.string(), True),
        _f("source_position", pa.int64(), True),
    ]
)

#: One row per environment step, for offline RL.
STEP_SCHEMA = pa.schema(
    [
        _f("run_id", pa.string()),
        _f("episode_id", pa.string()),
        _f("domain", pa.string()),
        _f("task_id", pa.string()),
        _f("step_index", pa.int32()),
        _f("observation", pa.string()),
        _f("action", pa.string()),
        _f("reward", pa.float64()),
        _f("next_observation", pa.string()),
        _f("terminated", pa.bool_()),
        _f("truncated", pa.bool_()),
        _f("prompt", pa.list_(MESSAGE_TYPE)),
        _f("completion", pa.list_(MESSAGE_TYPE)),
        _f("tools", JSON),
        _f("completion_token_ids", pa.list_(pa.field("item", pa.int64(), nullable=False)), True),
        _f("completion_logprobs", pa.list_(pa.field("item", pa.float64(), nullable=False)), True),
    ]
)

#: ``AlgorithmConfig.offline_data(input_read_schema=...)`` for ``DIR/steps``: RLlib's
#: ``Columns`` values to our column names (plain strings: importing this module does not
#: import RLlib). The text rows still need tokenising first: see ``train.offline``.
RLLIB_INPUT_READ_SCHEMA: dict[str, str] = {
    "eps_id": "episode_id",
    "obs": "observation",
    "actions": "action",
    "rewards": "reward",
    "new_obs": "next_observation",
    "terminateds": "terminated",
    "truncateds": "truncated",
}

_KEY_COLUMNS = ("run_id", "episode_id", "domain", "task_id")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SAFE_WRITER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")


def _file_schema(schema: pa.Schema) -> pa.Schema:
    """What a file stores: the whole schema (``domain`` too, for readers that ignore folder names), with a version tag."""
    return schema.with_metadata({b"taugym.dataset_schema_version": str(SCHEMA_VERSION).encode()})


def _storage_type(type_: pa.DataType) -> pa.DataType:
    """``type_`` with each JSON value as its text: pyarrow converts Python values to a nested extension type only so."""
    if type_ == JSON:
        return JSON.storage_type
    if pa.types.is_list(type_):
        return pa.list_(type_.value_field.with_type(_storage_type(type_.value_type)))
    if pa.types.is_struct(type_):
        return pa.struct([field.with_type(_storage_type(field.type)) for field in type_])
    return type_


_EPISODE_FILE_SCHEMA = _file_schema(EPISODE_SCHEMA)
_STEP_FILE_SCHEMA = _file_schema(STEP_SCHEMA)


# ---------------------------------------------------------------- validation
def _check_keys(value: Any, type_: pa.DataType, nullable: bool, path: str) -> None:
    """Raise ValueError naming ``path`` for what pyarrow's conversion lets through.

    That is a None where the schema forbids nulls, a dict key the schema has
    no field for (pyarrow would drop it), a fraction in an integer column
    (pyarrow would truncate it) and JSON text that does not parse.
    """
    if value is None:
        if not nullable:
            raise ValueError(f"column {path!r} must not be None")
    elif pa.types.is_integer(type_) and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"column {path!r} must be an integer, got {value!r}")
    elif type_ == JSON:
        try:
            json.loads(value)
        except (TypeError, ValueError):
            raise ValueError(f"column {path!r} must be JSON text (a str), got {value!r:.80}") from None
    elif pa.types.is_struct(type_) and isinstance(value, Mapping):
        unknown = sorted(set(value) - {field.name for field in type_})
        if unknown:
            raise ValueError(f"column {path!r} has unknown key(s) {unknown}; allowed: {[f.name for f in type_]}")
        for field in type_:
            _check_keys(value.get(field.name), field.type, field.nullable, f"{path}.{field.name}")
    elif pa.types.is_list(type_) and isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_keys(item, type_.value_type, type_.value_field.nullable, f"{path}[{i}]")


def checked_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, what: str = "a") -> pa.Table:
    """``rows`` (dicts) as a table of ``schema``; a bad row raises ValueError naming the column (nothing is dropped).

    pyarrow's conversion checks the types; :func:`_check_keys` what it does not.
    """
    for i, row in enumerate(rows):
        label = what if len(rows) == 1 else f"{what} {i}"
        if not isinstance(row, Mapping):
            raise ValueError(f"{label} row must be a dict of columns, got {type(row).__name__}")
        missing = [name for name in schema.names if name not in row]
        unknown = sorted(set(row) - set(schema.names))
        if missing or unknown:
            raise ValueError(
                f"{label} row: missing column(s) {missing}, unknown column(s) {unknown}; the columns are {schema.names}"
            )
        for field in schema:
            _check_keys(row[field.name], field.type, field.nullable, field.name)
    columns = []
    for field in schema:
        try:
            values = pa.array([row[field.name] for row in rows], type=_storage_type(field.type))
            columns.append(values.cast(field.type))
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            raise ValueError(f"{what} column {field.name!r}: {exc}") from None
    return pa.Table.from_arrays(columns, schema=schema)


def _check_name(kind: str, value: Any, pattern: re.Pattern, hint: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(
            f"{kind} must be a non-empty string of {hint} (it becomes part of a file or folder name), got {value!r}"
        )
    return value


# -------------------------------------------------------------- row builders
def _normalize_message(message: Mapping[str, Any], index: int) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise ValueError(f"messages[{index}] must be a dict, got {type(message).__name__}")
    known = {"role", "content", "tool_calls", "tool_call_id", "name"}
    dropped = sorted(k for k, v in message.items() if k not in known and v is not None)
    if dropped:
        raise ValueError(
            f"messages[{index}] has key(s) {dropped} that the messages column cannot hold; allowed: {sorted(known)}"
        )
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        if all(isinstance(p, Mapping) and p.get("type") == "text" for p in content):
            content = "".join(str(p.get("text", "")) for p in content)
        else:
            content = json.dumps(content, ensure_ascii=False)
    elif content is not None and not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False, default=str)
    tool_calls = None
    if message.get("tool_calls"):
        tool_calls = []
        for j, call in enumerate(message["tool_calls"]):
            function = call.get("function") or {}
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    json.loads(arguments)
                except ValueError:  # not JSON (a model's broken call): kept as a JSON string
                    arguments = json.dumps(arguments, ensure_ascii=False)
            else:
                arguments = json.dumps({} if arguments is None else arguments, ensure_ascii=False)
            tool_calls.append(
                {
                    "id": str(call.get("id") or f"call_{index}_{j}"),
                    "type": call.get("type") or "function",
                    "function": {"name": function.get("name"), "arguments": arguments},
                }
            )
    return {
        "role": message.get("role"),
        "content": content,
        "tool_calls": tool_calls,
        "tool_call_id": message.get("tool_call_id"),
        "name": message.get("name"),
    }


def _error_cause(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, Mapping):
        parts = [str(error[k]) for k in ("source", "type", "message") if error.get(k)]
        text = ": ".join(parts) if parts else json.dumps(error, ensure_ascii=False, default=str)
    else:
        text = str(error)
    return scrub_secrets(text)


def episode_row_from_info(
    info: Mapping[str, Any],
    *,
    run_id: str,
    trial: int,
    seed: int,
    agent: str,
    agent_model: str | None,
    user_model: str | None,
    user_strategy: str,
    duration_s: float,
    reward: float | None,
    terminated: bool,
    truncated: bool,
    num_steps: int,
    taugym_version: str,
    llm_usage: Mapping[str, Any] | None = None,
    episode_id: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The episode row for a finished ``TauEnv`` episode, from its final ``info``.

    ``reward`` is the episode's score as the caller reports it (``None`` for
    an errored episode). ``llm_usage`` is the episode's LLM accounting, agent
    and user together (``LLMUsage.as_dict()``; absent numbers count as 0).
    ``episode_id`` defaults to ``"<run_id>:<task_id>:<trial>:<env id>"``,
    unique across tasks, trials and runs (the env's own id depends on the
    reset seed only). ``source`` is where an imported episode came from:
    ``{"format", "file", "position"}`` (None for an episode TauGym ran).
    Build the step rows from this row with :func:`step_row`. Raises
    ValueError when ``info`` is not that of an episode's last step, or holds
    a message key the ``messages`` column cannot hold.
    """
    for key in ("task_id", "domain", "backend", "messages", "tools"):
        if key not in info:
            raise ValueError(f"info has no {key!r}: pass the info dict of TauEnv's last step")
    if info.get("termination") is None:
        raise ValueError("info has no 'termination': the episode is not over (pass the info of its last step)")
    error = info.get("error")
    if episode_id is None:
        episode_id = f"{run_id}:{info['task_id']}:{trial}:{info.get('episode_id', seed)}"
    usage = llm_usage if llm_usage is not None else {}
    return {
        "run_id": run_id,
        "episode_id": episode_id,
        "backend": info["backend"],
        "domain": info["domain"],
        "task_id": info["task_id"],
        "trial": trial,
        "seed": seed,
        "agent": agent,
        "agent_model": agent_model,
        "user_model": user_model,
        "user_strategy": user_strategy,
        "reward": None if reward is None else float(reward),
        "reward_breakdown": json.dumps(info.get("evaluation"), ensure_ascii=False, default=str),
        "terminated": bool(terminated),
        "truncated": bool(truncated),
        "error": error is not None or info["termination"] == "error",
        "error_cause": _error_cause(error),
        "termination": str(info["termination"]),
        "num_steps": num_steps,
        "messages": [_normalize_message(m, i) for i, m in enumerate(info["messages"])],
        "tools": json.dumps(list(info["tools"]), ensure_ascii=False, default=str),
        "llm_calls": int(usage.get("calls") or 0),
        "llm_retries": int(usage.get("retries") or 0),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "cost_usd": float(usage.get("cost_usd") or 0.0),
        "duration_s": float(duration_s),
        "taugym_version": taugym_version,
        "source_format": None if source is None else str(source["format"]),
        "source_file": None if source is None else str(source["file"]),
        "source_position": None if source is None else int(source["position"]),
    }


def step_row(
    episode_row: Mapping[str, Any],
    *,
    step_index: int,
    observation: str,
    action: str,
    reward: float,
    next_observation: str,
    terminated: bool,
    truncated: bool,
    prompt: Sequence[Mapping[str, Any]],
    completion: Sequence[Mapping[str, Any]],
    completion_token_ids: Sequence[int] | None = None,
    completion_logprobs: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A step row keyed like ``episode_row`` (same run_id, episode_id, domain, task_id).

    The arguments are the module's step columns; ``prompt`` and
    ``completion`` are normalised like the episode's ``messages``, and
    ``tools`` is copied from the episode row.
    """
    row = {key: episode_row[key] for key in _KEY_COLUMNS}
    row.update(
        step_index=step_index,
        observation=observation,
        action=action,
        reward=float(reward),
        next_observation=next_observation,
        terminated=bool(terminated),
        truncated=bool(truncated),
        prompt=[_normalize_message(m, i) for i, m in enumerate(prompt)],
        completion=[_normalize_message(m, i) for i, m in enumerate(completion)],
        tools=episode_row["tools"],
        completion_token_ids=None if completion_token_ids is None else [int(t) for t in completion_token_ids],
        completion_logprobs=None if completion_logprobs is None else [float(x) for x in completion_logprobs],
    )
    return row


# ------------------------------------------------------------------ manifest
def _manifest(store: Store) -> list[dict]:
    """Every commit record of the output, oldest first. Raises for a dataset without a manifest."""
    records = []
    for info in store.entries(MANIFEST_DIR):
        if info.base_name.startswith((".", "_")) or not info.base_name.endswith(".json"):
            continue  # a put that never finished is no record
        data = store.get(f"{MANIFEST_DIR}/{info.base_name}")
        if data is not None:
            records.append(json.loads(data))
    if not records and any(
        not i.base_name.startswith((".", "_"))
        for kind in (EPISODES_DIR, STEPS_DIR)
        for d in store.entries(kind, dirs=True)
        for i in store.entries(f"{kind}/{d.base_name}")
    ):
        raise ValueError(
            f"{store.root} holds Parquet files but no {MANIFEST_DIR}/ record of what is published "
            "(written by an older TauGym?); read its files directly, and write new runs to another --out"
        )
    return sorted(records, key=lambda r: (r.get("committed_at", 0), r["set"]))


def _live_pairs(records: list[dict]) -> dict[str, dict]:
    """The published file pairs: added by a record and not removed by a later one, by episodes path."""
    removed = {pair["episodes"] for record in records for pair in record.get("remove", [])}
    return {pair["episodes"]: pair for record in records for pair in record["add"] if pair["episodes"] not in removed}


def _apply(store: Store, record: dict) -> None:
    """Make a committed record visible: step 3 of the protocol (idempotent: also rolls a crashed publish forward)."""
    for pair in record.get("remove", []):
        store.delete(pair["episodes"])
        store.delete(pair["steps"])
    for pair in record["add"]:
        for kind in ("steps", "episodes"):
            if store.exists(pair[f"staged_{kind}"]):
                store.move(pair[f"staged_{kind}"], pair[kind])


def _staged(rel: str) -> str:
    folder, _, name = rel.rpartition("/")
    return f"{folder}/.{name}.tmp"


# -------------------------------------------------------------------- writer
def _stage_pair(store: Store, domain: str, name: str, episodes: pa.Table, steps: pa.Table) -> dict:
    """Write a file pair whole under its staged names (step 1 of the protocol); return its manifest entry."""
    pair = {"domain": domain, "episodes": f"{EPISODES_DIR}/{domain}/{name}", "steps": f"{STEPS_DIR}/{domain}/{name}"}
    for kind, table in (("steps", steps), ("episodes", episodes)):
        pair[f"staged_{kind}"] = staged = _staged(pair[kind])
        stream = store.open_output(staged)
        pq.write_table(table, stream, compression="zstd")
        store.finish_output(stream, staged)
    pair.update(
        episode_rows=episodes.num_rows,
        step_rows=steps.num_rows,
        errors=episodes.filter(episodes["error"])["episode_id"].to_pylist(),  # the rows a later commit may supersede
    )
    return pair


def episode_tables(episode_row: Mapping[str, Any], step_rows: Sequence[Mapping[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """One finished episode and its steps, checked, as the one-row episodes table and the steps table the files hold.

    ``step_rows`` are the episode's steps in order, one per env step, keyed
    like the episode. A missing or unknown column, a value of the wrong
    type, steps keyed to another episode or out of order raise ValueError
    naming it (the domain, which names the files' folder, is checked by the
    writer). This is most of a write's cost (the ``prompt`` column repeats
    the conversation so far); the rollout actors run it, so the job's one
    writer only holds and writes tables (:meth:`ParquetEpisodeWriter.write_tables`).
    """
    episodes = checked_table([episode_row], _EPISODE_FILE_SCHEMA, "episode")
    step_rows = list(step_rows)
    if len(step_rows) != episode_row["num_steps"]:
        raise ValueError(
            f"episode {episode_row['episode_id']!r} has num_steps={episode_row['num_steps']} "
            f"but {len(step_rows)} step rows were given"
        )
    steps = checked_table(step_rows, _STEP_FILE_SCHEMA, "step")
    for key in _KEY_COLUMNS:
        for i, value in enumerate(steps[key].to_pylist()):
            if value != episode_row[key]:
                raise ValueError(f"step {i}: column {key!r} is {value!r} but the episode's is {episode_row[key]!r}")
    if steps["step_index"].to_pylist() != list(range(len(step_rows))):
        raise ValueError(f"column 'step_index' is {steps['step_index'].to_pylist()}: steps in order from 0")
    return episodes, steps


class _Held:
    """One domain's episodes waiting in memory for their file."""

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.episodes: list[pa.Table] = []
        self.steps: list[pa.Table] = []
        self.supersedes: list[str] = []


class ParquetEpisodeWriter:
    """Writes finished episodes and their steps to ``out_dir/episodes`` and ``out_dir/steps``.

    ``write(episode_row, step_rows)`` checks the rows against the schemas (a
    missing or unknown column, or a value of the wrong type, raises
    ValueError naming it) and holds them in memory with the domain's other
    unpublished episodes. ``step_rows`` are the episode's steps in order, one
    per env step, keyed like the episode. ``supersedes`` names the
    ``episode_id`` of a published error row the episode replaces
    (``--retry-errors``). ``write_tables`` takes the same episode already
    checked and converted by :func:`episode_tables` elsewhere (the rollout
    actors do it, so the writer's own work per episode stays small).

    A domain's episodes are written as one file pair and published (see the
    module's publishing protocol) once they are ``max_rows_per_file``, once
    the oldest is ``max_seconds_per_file`` old (checked on each write and by
    :meth:`publish_due`), and on :meth:`close`; a crash loses only those.

    A writer owns its output through the folder's
    :class:`~rollout.store.OutputLease` (or the one passed in); on start it
    finishes what a crashed writer committed and removes what it left
    uncommitted. ``run_id`` and ``writer_id`` name the files;
    ``filesystem`` is a ``pyarrow.fs`` filesystem holding ``out_dir``
    (default: the local disk). Thread-safe; use it as a context manager. A
    writer dropped without :meth:`close` publishes nothing more (it warns).
    """

    def __init__(
        self,
        out_dir: PathLike,
        run_id: str,
        writer_id: str = "0",
        max_rows_per_file: int = 1024,
        max_seconds_per_file: float = 60.0,
        *,
        filesystem: Any = None,
        lease: OutputLease | None = None,
    ):
        self.out_dir = Path(out_dir) if filesystem is None else out_dir
        self.run_id = _check_name("run_id", run_id, _SAFE_NAME, "letters, digits, '_', '.' and '-'")
        self.writer_id = _check_name("writer_id", str(writer_id), _SAFE_WRITER_ID, "letters, digits, '_' and '.'")
        if not isinstance(max_rows_per_file, int) or max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file must be an int >= 1, got {max_rows_per_file!r}")
        if not max_seconds_per_file > 0:
            raise ValueError(f"max_seconds_per_file must be > 0, got {max_seconds_per_file!r}")
        self.max_rows_per_file = max_rows_per_file
        self.max_seconds_per_file = float(max_seconds_per_file)
        self._held: dict[str, _Held] = {}
        self._lock = threading.RLock()
        self.store = lease.store if lease is not None else Store(out_dir, filesystem)
        self._own_lease = lease is None
        self.lease = lease if lease is not None else OutputLease(self.store).acquire()
        self._closed = False
        try:
            self._next_seq = self._recover()
        except BaseException:
            self._release()
            raise

    def write(
        self, episode_row: Mapping[str, Any], step_rows: Sequence[Mapping[str, Any]], supersedes: str | None = None
    ) -> None:
        """Check and hold one finished episode and its steps; may publish files."""
        self.write_tables(*episode_tables(episode_row, step_rows), supersedes=supersedes)

    def write_tables(self, episodes: pa.Table, steps: pa.Table, supersedes: str | None = None) -> None:
        """Hold one finished episode already checked by :func:`episode_tables` (wherever it finished); may publish.

        The costly part of :meth:`write` (checking rows and converting them
        to Arrow) is :func:`episode_tables`; this is what is left for the
        one writer: a check that the tables have the files' schemas and one
        episode, then holding them. Raises ValueError otherwise.
        """
        if not (
            episodes.schema.equals(_EPISODE_FILE_SCHEMA, check_metadata=True)
            and steps.schema.equals(_STEP_FILE_SCHEMA, check_metadata=True)
        ):  # also another schema version: the tag is in the metadata
            raise ValueError(
                f"the tables do not have the dataset's schemas (version {SCHEMA_VERSION}); make them with "
                "episode_tables() of this TauGym"
            )
        if episodes.num_rows != 1:
            raise ValueError(f"write_tables takes one episode, got {episodes.num_rows} episode rows")
        domain = _check_name(
            "column 'domain'", episodes["domain"][0].as_py(), _SAFE_NAME, "letters, digits, '_', '.' and '-'"
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("the writer is closed")
            held = self._held.setdefault(domain, _Held())
            held.episodes.append(episodes)
            held.steps.append(steps)
            if supersedes is not None:
                held.supersedes.append(supersedes)
            if len(held.episodes) >= self.max_rows_per_file:
                self._publish([domain])
            self.publish_due()

    def publish_due(self) -> None:
        """Publish the episodes held for ``max_seconds_per_file`` or longer."""
        with self._lock:
            now = time.monotonic()
            due = [d for d, held in self._held.items() if now - held.since >= self.max_seconds_per_file]
            if due:
                self._publish(due)

    def close(self) -> None:
        """Publish what is held, give the output back and stop; calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._held:
                    self._publish(list(self._held))
            finally:
                self._closed = True
                self._release()

    def __enter__(self) -> ParquetEpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            if self._held:
                warnings.warn(
                    f"ParquetEpisodeWriter for {self.out_dir} was dropped without close(): "
                    f"{sum(len(held.episodes) for held in self._held.values())} episode(s) stay unpublished",
                    ResourceWarning,
                    stacklevel=2,
                )
            self._closed = True
            self._release()

    # --------------------------------------------------------------- private
    def _release(self) -> None:
        if getattr(self, "_own_lease", False):
            self.lease.release()

    def _prefix(self) -> str:
        return f"part-{self.run_id}-{self.writer_id}-"

    def _recover(self) -> int:
        """Finish what a crashed writer committed, remove what it did not; return the next free sequence number."""
        records = _manifest(self.store)
        for record in records:
            _apply(self.store, record)
        live = _live_pairs(records)
        published = {p["episodes"] for p in live.values()} | {p["steps"] for p in live.values()}
        pattern = re.compile(r"^\.?" + re.escape(self._prefix()) + r"(\d+)\.parquet(\.tmp)?$")
        highest = max(
            (int(m.group(1)) for rel in published if (m := pattern.match(rel.rpartition("/")[2]))), default=-1
        )
        for kind in (EPISODES_DIR, STEPS_DIR):  # what no record names: staged files and strays of crashed writers
            for folder in self.store.entries(kind, dirs=True):
                for info in self.store.entries(f"{kind}/{folder.base_name}"):
                    rel = f"{kind}/{folder.base_name}/{info.base_name}"
                    if rel not in published and re.match(r"^\.?part-.*\.parquet(\.tmp)?$", info.base_name):
                        self.store.delete(rel)
        for info in self.store.entries(MANIFEST_DIR):
            if info.base_name.startswith("."):  # a record put that never finished
                self.store.delete(f"{MANIFEST_DIR}/{info.base_name}")
        return highest + 1

    def _next_name(self) -> str:
        name = f"{self._prefix()}{self._next_seq:05d}.parquet"
        self._next_seq += 1
        return name

    def _publish(self, domains: list[str]) -> None:
        """Write the held episodes of ``domains`` as file pairs, commit them in one manifest record, show them."""
        self.lease.check()
        add, superseded = [], set()
        for domain in domains:
            held = self._held.pop(domain)
            episodes, steps = pa.concat_tables(held.episodes), pa.concat_tables(held.steps)
            add.append(_stage_pair(self.store, domain, self._next_name(), episodes, steps))
            superseded.update(held.supersedes)
        remove = self._supersede(superseded, add) if superseded else []
        name = add[0]["episodes"].rpartition("/")[2].removesuffix(".parquet")  # unique: file names never repeat
        record = {
            "format": 1,
            "run_id": self.run_id,
            "set": name,
            "committed_at": time.time(),
            "add": add,
            "remove": remove,
        }
        self.lease.check()
        self.store.put(f"{MANIFEST_DIR}/{name}.json", json.dumps(record).encode())  # the commit
        _apply(self.store, record)

    def _supersede(self, superseded: set[str], add: list[dict]) -> list[dict]:
        """Rewrite the published pairs holding the superseded error rows without them (staged, added to ``add``)."""
        holders = [pair for pair in _live_pairs(_manifest(self.store)).values() if superseded & set(pair["errors"])]
        unknown = superseded - {e for pair in holders for e in pair["errors"]}
        if unknown:
            raise ValueError(f"only published error rows can be superseded; {sorted(unknown)} are not")
        gone = pa.array(sorted(superseded))
        remove = []
        for pair in holders:
            episodes, steps = (_read_file(self.store, pair[kind]) for kind in ("episodes", "steps"))
            kept_episodes = episodes.filter(pc.invert(pc.is_in(episodes["episode_id"], gone)))
            kept_steps = steps.filter(pc.invert(pc.is_in(steps["episode_id"], gone)))
            remove.append({"episodes": pair["episodes"], "steps": pair["steps"]})
            if kept_episodes.num_rows:
                add.append(_stage_pair(self.store, pair["domain"], self._next_name(), kept_episodes, kept_steps))
        return remove


def _read_file(store: Store, rel: str) -> pa.Table:
    """One published file (or its staged copy while a crashed publish is rolled forward)."""
    path = rel if store.exists(rel) else _staged(rel)
    return pq.read_table(store.path(path), filesystem=store.fs)


# ------------------------------------------------------------------- readers
def _check_version(store: Store, files: list[str], kind: str) -> None:
    """Raise a ValueError that says what to do when the files were written with another schema version."""
    for rel in {files[0], files[-1]}:
        metadata = pq.read_schema(store.path(rel), filesystem=store.fs).metadata or {}
        version = int(metadata.get(b"taugym.dataset_schema_version", b"1"))
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"{store.root} was written with dataset schema version {version}; this TauGym reads version "
                f"{SCHEMA_VERSION} (see SCHEMA_VERSION in rollout/dataset.py). Its files still read with "
                f"pyarrow.dataset.dataset({str(store.root) + '/' + kind!r}, partitioning='hive') "
                "(version 1: tool-call arguments, tools and reward_breakdown are JSON text, steps have no "
                "prompt/completion); to write new rows, run into another --out"
            )


def column_names(schema: pa.Schema, columns: Iterable[str] | None, kind: str) -> list[str]:
    """The ``columns`` a reader asked for (None: all of ``schema``); an unknown one raises ValueError listing them."""
    names = list(schema.names if columns is None else columns)
    unknown = [c for c in names if c not in schema.names]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; the {kind} columns are {schema.names}")
    return names


def _read(out_dir: PathLike, kind: str, schema: pa.Schema, columns: Iterable[str] | None) -> pa.Table:
    names = column_names(schema, columns, kind)
    paths = published_files(out_dir, kind)
    if not paths:
        return checked_table([], pa.schema([schema.field(c) for c in names]), kind)
    return ds.dataset(paths, schema=schema, format="parquet", filesystem=Store(out_dir).fs).to_table(columns=names)


def read_episodes(out_dir: PathLike, columns: Iterable[str] | None = None) -> pa.Table:
    """Every published episode row under ``out_dir`` as a table of :data:`EPISODE_SCHEMA`.

    ``columns`` selects columns (only those are read). An empty table with
    the schema when nothing has been published. The manifest says what is
    published: rows of files still being written are not included.
    """
    return _read(out_dir, EPISODES_DIR, EPISODE_SCHEMA, columns)


def read_steps(out_dir: PathLike, columns: Iterable[str] | None = None) -> pa.Table:
    """Every published step row under ``out_dir`` as a table of :data:`STEP_SCHEMA`.

    Every step returned belongs to a published episode. Empty table with the
    schema when there are none.
    """
    return _read(out_dir, STEPS_DIR, STEP_SCHEMA, columns)


def completed_keys(out_dir: PathLike) -> set[tuple[str, str, int]]:
    """``(domain, task_id, trial)`` of every published episode, for ``--resume``.

    Reads only those three columns. Errored episodes count as completed (their
    row is there; only ``--retry-errors`` runs them again, see :func:`error_rows`).
    """
    return set(_rows(read_episodes(out_dir, columns=["domain", "task_id", "trial"])))


def error_rows(out_dir: PathLike) -> dict[tuple[str, str, int], str]:
    """``{(domain, task_id, trial): episode_id}`` of the published error rows (what ``--retry-errors`` re-runs)."""
    table = read_episodes(out_dir, columns=["domain", "task_id", "trial", "episode_id", "error"])
    return {(d, t, k): e for d, t, k, e, error in _rows(table) if error}


def _rows(table: pa.Table) -> Iterable[tuple]:
    """The rows of ``table`` as tuples, in column order."""
    return zip(*(column.to_pylist() for column in table.columns))


def published_files(out_dir: PathLike, kind: str = STEPS_DIR) -> list[str]:
    """The paths of the published files of ``kind`` (``"episodes"`` or ``"steps"``), for readers of file lists
    (a staged name where a crashed publish is not yet rolled forward)."""
    store = Store(out_dir)
    pairs = sorted(_live_pairs(_manifest(store)).values(), key=lambda pair: pair[kind])
    files = [pair[kind] if store.exists(pair[kind]) else pair[f"staged_{kind}"] for pair in pairs]
    if files:
        _check_version(store, files, kind)
    return [store.path(f) for f in files]
