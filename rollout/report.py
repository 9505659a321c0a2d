"""``taugym report DIR``: one self-contained HTML page that shows how a run went.

The page (``DIR/report.html``) holds everything it shows, with no network at
view time: the summary (the numbers of ``summary.json``, from
:func:`rollout.summary.summarize_rows`, the one summary code), figures per
domain drawn with matplotlib as inline SVG, a filterable episode table and a
conversation viewer. Conversations are stored compressed: the system prompt
and tool schemas once per domain, and the rest in gzip blocks of a few
hundred episodes (each distinct text stored once per block, so the trials of
a task share their repeated tool results), which the browser inflates with
its own ``DecompressionStream`` when an episode is opened.

``--compare DIR2`` adds a second run: its pass^k curves beside this run's,
its summary beside this one's, and the per-task difference of mean reward.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout.dataset import read_episodes
from rollout.summary import is_success, summarize_rows

__all__ = ["build_report", "reward_checks", "report_parser", "run_report_command", "REPORT_NAME"]

REPORT_NAME = "report.html"
#: Episodes per compressed block of conversations: the viewer inflates one block to show one episode.
BLOCK_EPISODES = 200
#: An agent whose name matches is drawn as the do-nothing baseline.
BASELINE_AGENT = re.compile(r"noop|no-op|nothing|idle", re.IGNORECASE)
#: Columns the report needs (the summary's); every other column is optional.
REQUIRED_COLUMNS = ("domain", "task_id", "trial", "reward", "error")
_HEAVY_COLUMNS = ("messages", "tools", "reward_breakdown")
# tau2's reward basis names for each kind of check
_BASIS = {
    "database": "DB",
    "assertion": "ENV_ASSERTION",
    "action": "ACTION",
    "communicate": "COMMUNICATE",
    "nl": "NL_ASSERTION",
}

_COLORS = {"run": "#1f77b4", "compare": "#ff7f0e", "baseline": "#7f7f7f", "error": "#3b1f4a", "bar": "#4c72b0"}


# ----------------------------------------------------------------- reading
@dataclass
class Run:
    """A dataset folder read for the report: scalar columns as rows, the table for the heavy ones."""

    path: Path
    rows: list[dict]  # one dict per episode (scalar columns only), in the dataset's order
    summary: dict  # summarize_rows(rows)
    summary_file: dict | None  # DIR/summary.json as written by the job, if any
    table: Any = None  # the pyarrow table, sorted by domain, task, trial
    columns: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path.resolve().name


def load_run(out_dir: Path, conversations: bool = True) -> Run:
    """Read the episodes of ``out_dir`` with :func:`read_episodes`; columns are used by name."""
    out_dir = Path(out_dir)
    if not (out_dir / "episodes").is_dir():
        raise ValueError(f"{out_dir} holds no episodes dataset (expected {out_dir / 'episodes'}/)")
    table = read_episodes(out_dir)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"the episodes dataset in {out_dir} has no column(s) {missing}")
    scalar_names = [c for c in table.column_names if c not in _HEAVY_COLUMNS]
    rows = table.select(scalar_names).to_pylist()
    summary = summarize_rows(rows)  # the dataset's order: the same sums as summarize(out_dir)
    summary_file = None
    if (out_dir / "summary.json").is_file():
        try:
            summary_file = json.loads((out_dir / "summary.json").read_text())
        except ValueError:
            summary_file = None
    run = Run(out_dir, rows, summary, summary_file, columns=list(table.column_names))
    if conversations:
        keys = [("domain", "ascending"), ("task_id", "ascending"), ("trial", "ascending")]
        if "episode_id" in table.column_names:
            keys.append(("episode_id", "ascending"))
        import pyarrow.compute as pc

        indices = pc.sort_indices(table.select([k for k, _ in keys]), sort_keys=keys)
        run.table = table.take(indices)
        run.rows = run.table.select(scalar_names).to_pylist()
    return run


def _reward(row: Mapping[str, Any]) -> float:
    """The reward as the summary counts it: an errored episode scores 0."""
    return 0.0 if row.get("error") else float(row.get("reward") or 0.0)


def _episode_id(row: Mapping[str, Any], index: int) -> str:
    return str(row.get("episode_id") or f"{row['domain']}:{row['task_id']}:{row['trial']}:{index}")


# ---------------------------------------------------------- reward checks
def _call_text(name: Any, arguments: Any) -> str:
    if isinstance(arguments, Mapping):
        args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    else:
        args = "" if arguments is None else str(arguments)
    return f"{name}({args})"


def reward_checks(breakdown: Any) -> dict:
    """What a backend's reward breakdown says, check by check.

    ``breakdown`` is the episode's ``reward_breakdown`` (JSON text or its
    value): tau2's ``RewardInfo`` (``db_check``, ``env_assertions``,
    ``action_checks``, ``communicate_checks``, ``nl_assertions``,
    ``reward_basis``, ``reward_breakdown``) or tau-bench v1's
    ``RewardResult`` (``info.r_actions`` with the data hash, or
    ``info.r_outputs`` with ``outputs``). Returns ``{"checks": [{"kind",
    "label", "ok", "scored"}], "parts": {basis: value}, "notes": [...]}``;
    ``scored`` is False for a check outside the task's reward basis (shown,
    but it does not change the reward).
    """
    if isinstance(breakdown, (str, bytes)):
        try:
            breakdown = json.loads(breakdown)
        except ValueError:
            return {"checks": [], "parts": {}, "notes": [str(breakdown)[:500]]}
    result: dict = {"checks": [], "parts": {}, "notes": []}
    if not isinstance(breakdown, Mapping):
        return result
    basis = breakdown.get("reward_basis")
    basis = set(basis) if isinstance(basis, list) else None

    def add(kind: str, label: str, ok: Any) -> None:
        scored = basis is None or _BASIS.get(kind) in basis
        result["checks"].append({"kind": kind, "label": label, "ok": bool(ok), "scored": scored})

    db = breakdown.get("db_check")
    if isinstance(db, Mapping):
        add("database", "database hash equals the gold hash", db.get("db_match"))
    for check in breakdown.get("env_assertions") or []:
        assertion = check.get("env_assertion") or {}
        label = _call_text(assertion.get("func_name"), assertion.get("arguments"))
        if assertion.get("env_type"):
            label = f"{assertion['env_type']}: {label}"
        add("assertion", label, check.get("met"))
    for check in breakdown.get("action_checks") or []:
        action = check.get("action") or {}
        add("action", _call_text(action.get("name"), action.get("arguments")), check.get("action_match"))
    for check in breakdown.get("communicate_checks") or []:
        add("communicate", str(check.get("info")), check.get("met"))
    for check in breakdown.get("nl_assertions") or []:
        add("nl", str(check.get("nl_assertion")), check.get("met"))
    parts = breakdown.get("reward_breakdown")
    if isinstance(parts, Mapping):
        result["parts"] = {str(k): v for k, v in parts.items()}
    info = breakdown.get("info")
    if isinstance(info, Mapping) and basis is None:  # tau-bench v1's RewardResult
        if "r_actions" in info:
            add("database", "database hash equals the gold hash", (info.get("r_actions") or 0) >= 1 - 1e-6)
        for output, met in (info.get("outputs") or {}).items():
            add("communicate", str(output), met)
    if isinstance(info, Mapping):
        for error in info.get("env_assertion_errors") or []:
            result["notes"].append(f"assertion could not run: {error}")
    for key in ("note",):
        if breakdown.get(key):
            result["notes"].append(str(breakdown[key]))
    if breakdown.get("reward_if_ended") is not None:
        result["notes"].append(f"reward had the episode ended: {breakdown['reward_if_ended']}")
    return result


def failed_summary(row: Mapping[str, Any], checks: dict) -> str:
    """A few words on why an episode did not score 1 ("" when it did)."""
    if row.get("error"):
        return "error"
    if is_success(row.get("reward")):
        return ""
    failed = [c["kind"] for c in checks["checks"] if c["scored"] and not c["ok"]]
    if failed:
        return ", ".join(dict.fromkeys(failed))
    termination = row.get("termination")
    return f"ended by {termination}" if termination and termination not in ("agent", "user") else "reward < 1"


def cause_group(cause: str | None) -> str:
    """Errors grouped by cause: ``source: type`` of ``source: type: message``, else the first line."""
    text = (cause or "unknown").strip().splitlines()[0] if (cause or "").strip() else "unknown"
    parts = text.split(": ")
    if len(parts) >= 3:
        text = ": ".join(parts[:2])
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------ conversations
class _Block:
    """A block of episodes' conversations: each distinct text once, messages refer to it by index."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.index: dict[str, int] = {}
        self.episodes: dict[str, dict] = {}

    def ref(self, text: Any) -> int | None:
        if text is None:
            return None
        if not isinstance(text, str):
            text = json.dumps(text, ensure_ascii=False, default=str)
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.strings)
            self.strings.append(text)
        return found

    def encode(self) -> str:
        data = json.dumps({"s": self.strings, "e": self.episodes}, ensure_ascii=False, separators=(",", ":"))
        return base64.b64encode(gzip.compress(data.encode("utf-8"), compresslevel=6, mtime=0)).decode("ascii")


def _arguments_text(arguments: Any) -> str:
    """Tool-call arguments as text, whether the dataset stores a JSON string or a structured value."""
    if isinstance(arguments, str):
        return arguments
    return json.dumps({} if arguments is None else arguments, ensure_ascii=False, default=str)


class _SharedTexts:
    """System prompts and tool lists, each stored once per domain."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict]] = defaultdict(list)
        self._seen: dict[tuple[str, str, str], int] = {}

    def ref(self, domain: str, kind: str, text: str) -> int:
        key = (domain, kind, text)
        if key not in self._seen:
            self._seen[key] = len(self.items[domain])
            self.items[domain].append({"kind": kind, "text": text, "episodes": 0})
        index = self._seen[key]
        self.items[domain][index]["episodes"] += 1
        return index


def _encode_conversation(block: _Block, shared: _SharedTexts, domain: str, messages: Any, tools: Any) -> dict:
    out: dict = {"m": []}
    messages = list(messages or [])
    if messages and (messages[0] or {}).get("role") == "system" and isinstance(messages[0].get("content"), str):
        out["sys"] = shared.ref(domain, "system", messages[0]["content"])
        messages = messages[1:]
    if tools is not None:
        tools_text = tools if isinstance(tools, str) else json.dumps(tools, ensure_ascii=False, default=str)
        out["tools"] = shared.ref(domain, "tools", tools_text)
    for message in messages:
        message = message or {}
        entry: dict = {"r": message.get("role") or "?"}
        if message.get("content") is not None:
            entry["c"] = block.ref(message["content"])
        calls = []
        for call in message.get("tool_calls") or []:
            function = (call or {}).get("function") or {}
            calls.append(
                {
                    "n": function.get("name"),
                    "a": block.ref(_arguments_text(function.get("arguments"))),
                    "i": call.get("id"),
                }
            )
        if calls:
            entry["t"] = calls
        if message.get("tool_call_id"):
            entry["i"] = message["tool_call_id"]
        if message.get("name"):
            entry["n"] = message["name"]
        out["m"].append(entry)
    return out


# ------------------------------------------------------------------ figures
def _svg(figure: Any, salt: str) -> str:
    """A matplotlib figure as inline SVG markup (text kept as text; ids unique per figure)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _style(ax: Any, integer_axis: str = "") -> None:
    from matplotlib.ticker import MaxNLocator

    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=7)
    if integer_axis:
        getattr(ax, f"{integer_axis}axis").set_major_locator(MaxNLocator(integer=True))


def _short(value: float) -> str:
    """A number in a few characters: 0.0123, 12.3, 45.6k, 1.2M."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _pass_k_figure(domain: str, curves: list[dict]) -> Any:
    figure = _figure(3.9, 2.9)
    ax = figure.add_subplot()
    longest = 1
    for curve in curves:
        ks = [int(k) for k in curve["values"]]
        if not ks:
            continue
        longest = max(longest, max(ks))
        ax.plot(
            ks,
            list(curve["values"].values()),
            marker="o",
            color=curve["color"],
            linestyle=curve.get("style", "-"),
            label=curve["label"],
        )
    ax.set_xlabel("k", fontsize=9)
    ax.set_ylabel("pass^k", fontsize=9)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(0.7, longest + 0.3)
    ax.set_xticks(range(1, longest + 1) if longest <= 16 else range(1, longest + 1, max(1, longest // 8)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{domain}: pass^k", fontsize=10)
    _style(ax)
    return figure


def _grid_figure(domain: str, rows: list[dict]) -> Any:
    import numpy as np
    from matplotlib.colors import ListedColormap

    tasks = sorted({r["task_id"] for r in rows})
    trials = sorted({r["trial"] for r in rows})
    task_at = {t: i for i, t in enumerate(tasks)}
    trial_at = {t: i for i, t in enumerate(trials)}
    rewards = np.full((len(trials), len(tasks)), np.nan)
    errors = np.zeros_like(rewards, dtype=bool)
    sums: dict[tuple[int, int], list[float]] = defaultdict(list)
    for row in rows:
        cell = (trial_at[row["trial"]], task_at[row["task_id"]])
        sums[cell].append(_reward(row))
        errors[cell] |= bool(row.get("error"))
    for cell, values in sums.items():
        rewards[cell] = sum(values) / len(values)
    height = min(5.0, 1.3 + 0.18 * len(trials))
    figure = _figure(9.0, height)
    ax = figure.add_subplot()
    image = ax.imshow(rewards, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    ax.imshow(
        np.where(errors, 1.0, np.nan), aspect="auto", cmap=ListedColormap([_COLORS["error"]]), interpolation="nearest"
    )
    step = max(1, len(tasks) // 40)
    ax.set_xticks(range(0, len(tasks), step))
    ax.set_xticklabels([tasks[i].split("-")[-1] for i in range(0, len(tasks), step)], rotation=90, fontsize=6)
    trial_step = max(1, len(trials) // 12)
    ax.set_yticks(range(0, len(trials), trial_step))
    ax.set_yticklabels([str(trials[i]) for i in range(0, len(trials), trial_step)], fontsize=7)
    ax.set_xlabel(f"task ({len(tasks)})", fontsize=9)
    ax.set_ylabel("trial", fontsize=9)
    ax.set_title(f"{domain}: reward per task × trial (dark: errored, scored 0)", fontsize=10)
    colorbar = figure.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    colorbar.ax.tick_params(labelsize=7)
    return figure


def _bar_figure(title: str, counts: Counter, color: str) -> Any:
    items = counts.most_common(15)
    labels = [label for label, _ in items][::-1]
    values = [value for _, value in items][::-1]
    figure = _figure(3.9, max(1.6, 0.9 + 0.28 * len(items)))
    ax = figure.add_subplot()
    bars = ax.barh(range(len(values)), values, color=color)
    ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("episodes", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.15)
    _style(ax, "x")
    return figure


_DISTRIBUTIONS = (
    ("steps", lambda r: r.get("num_steps")),
    ("duration (s)", lambda r: r.get("duration_s")),
    ("LLM calls", lambda r: r.get("llm_calls")),
    (
        "tokens",
        lambda r: (
            None
            if r.get("prompt_tokens") is None
            else (r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0)
        ),
    ),
    ("cost (USD)", lambda r: r.get("cost_usd")),
)


def _distributions_figure(domain: str, rows: list[dict]) -> Any:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    figure = _figure(11.0, 2.3)
    axes = figure.subplots(1, len(_DISTRIBUTIONS))
    for ax, (name, value) in zip(axes, _DISTRIBUTIONS):
        values = [v for v in (value(r) for r in rows) if v is not None]
        if values and min(values) == max(values):  # one value: say it rather than draw one bar
            ax.set_title(name, fontsize=8)
            ax.text(
                0.5,
                0.5,
                f"{_short(values[0])} in all\n{len(values)} episodes",
                ha="center",
                va="center",
                fontsize=9,
                transform=ax.transAxes,
            )
            ax.set_axis_off()
            continue
        if values:
            ax.hist(values, bins=min(30, max(1, len(set(values)))), color=_COLORS["bar"])
            mean = sum(values) / len(values)
            ax.set_title(f"{name}\nmean {_short(mean)} · max {_short(max(values))}", fontsize=8)
        else:
            ax.set_title(f"{name}\n(not in the dataset)", fontsize=8)
        _style(ax, "y")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _short(value)))
    axes[0].set_ylabel("episodes", fontsize=8)
    figure.suptitle(f"{domain}: per episode", fontsize=10)
    return figure


def _task_diff_figure(domain: str, diffs: list[tuple[str, float]], labels: tuple[str, str]) -> Any:
    changed = [(t, d) for t, d in diffs if abs(d) > 1e-9]
    better = sum(d > 0 for _, d in changed)
    worse = sum(d < 0 for _, d in changed)
    figure = _figure(9.0, 2.6)
    ax = figure.add_subplot()
    xs = range(len(diffs))
    ax.bar(
        xs, [d for _, d in diffs], color=[_COLORS["run"] if d >= 0 else _COLORS["compare"] for _, d in diffs], width=1.0
    )
    ax.axhline(0, color="black", linewidth=0.6)
    step = max(1, len(diffs) // 40)
    ax.set_xticks(range(0, len(diffs), step))
    ax.set_xticklabels([diffs[i][0].split("-")[-1] for i in range(0, len(diffs), step)], rotation=90, fontsize=6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("Δ mean reward", fontsize=9)
    ax.set_title(
        f"{domain}: per task, {labels[0]} − {labels[1]} ({better} better, {worse} worse, {len(diffs) - len(changed)} same)",
        fontsize=10,
    )
    _style(ax)
    return figure


# ---------------------------------------------------------------- the page
def _domain_curves(run: Run, domain: str, compare: Run | None) -> list[dict]:
    curves = [
        {"label": f"{run.label} (summary)", "values": run.summary["domains"][domain]["pass^k"], "color": _COLORS["run"]}
    ]
    agents = sorted({r.get("agent") for r in run.rows if r["domain"] == domain and r.get("agent")})
    if len(agents) > 1:
        palette = ["#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
        for i, agent in enumerate(agents):
            values = summarize_rows(r for r in run.rows if r["domain"] == domain and r.get("agent") == agent)[
                "domains"
            ][domain]["pass^k"]
            baseline = bool(BASELINE_AGENT.search(agent))
            curves.append(
                {
                    "label": f"agent {agent}" + (" (do-nothing baseline)" if baseline else ""),
                    "values": values,
                    "color": _COLORS["baseline"] if baseline else palette[i % len(palette)],
                    "style": "--" if baseline else ":",
                }
            )
    if compare is not None and domain in compare.summary["domains"]:
        curves.append(
            {
                "label": compare.label,
                "values": compare.summary["domains"][domain]["pass^k"],
                "color": _COLORS["compare"],
                "style": "--",
            }
        )
    return curves


def _task_means(run: Run, domain: str) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for row in run.rows:
        if row["domain"] == domain:
            values[row["task_id"]].append(_reward(row))
    return {task: sum(v) / len(v) for task, v in values.items()}


def _figures(run: Run, compare: Run | None) -> dict[str, list[dict]]:
    by_domain: dict[str, list[dict]] = defaultdict(list)
    for row in run.rows:
        by_domain[row["domain"]].append(row)
    figures: dict[str, list[dict]] = {}
    for domain in run.summary["domains"]:
        rows = by_domain[domain]
        items = []

        def add(name: str, figure: Any, caption: str, wide: bool = False) -> None:
            items.append({"name": name, "svg": _svg(figure, f"{domain}-{name}"), "caption": caption, "wide": wide})

        add(
            "pass_k",
            _pass_k_figure(domain, _domain_curves(run, domain, compare)),
            "pass^k against k (tau-bench's estimator; errored episodes count as failures)",
        )
        add(
            "terminations",
            _bar_figure(f"{domain}: termination", Counter(str(r.get("termination")) for r in rows), _COLORS["bar"]),
            "how episodes ended",
        )
        errors = Counter(cause_group(r.get("error_cause")) for r in rows if r.get("error"))
        if errors:
            add(
                "errors",
                _bar_figure(f"{domain}: errors by cause ({sum(errors.values())})", errors, _COLORS["error"]),
                "errored episodes by cause (source: type)",
            )
        add(
            "grid",
            _grid_figure(domain, rows),
            "reward per task × trial: a column of mixed colours is a flaky task",
            wide=True,
        )
        add("distributions", _distributions_figure(domain, rows), "distributions per episode", wide=True)
        if compare is not None:
            ours, theirs = _task_means(run, domain), _task_means(compare, domain)
            common = sorted(set(ours) & set(theirs))
            if common:
                diffs = [(t, ours[t] - theirs[t]) for t in common]
                add(
                    "task_diff",
                    _task_diff_figure(domain, diffs, (run.label, compare.label)),
                    f"mean reward per task, {run.label} minus {compare.label} ({len(common)} tasks in both)",
                    wide=True,
                )
        figures[domain] = items
    return figures


def _meta(run: Run) -> dict:
    def values(name: str) -> list[str]:
        return sorted({str(r[name]) for r in run.rows if r.get(name) is not None})

    return {
        name: values(name)
        for name in ("run_id", "backend", "agent", "agent_model", "user_model", "user_strategy", "taugym_version")
    }


def _summary_mismatch(run: Run) -> str | None:
    if not run.summary_file or "domains" not in run.summary_file:
        return None
    if json.loads(json.dumps(run.summary_file["domains"])) != json.loads(json.dumps(run.summary["domains"])):
        return "summary.json differs from the dataset (written before a resume or a change?): the page shows the dataset's numbers"
    return None


def _json_for_script(value: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


_INDEX_COLUMNS = (
    "id",
    "domain",
    "task",
    "trial",
    "agent",
    "reward",
    "error",
    "termination",
    "failed",
    "steps",
    "duration_s",
    "llm_calls",
    "tokens",
    "cost_usd",
    "error_cause",
    "block",
)


def _episodes(run: Run, shared: _SharedTexts) -> tuple[list[list], list[str]]:
    """The episode index (one row per episode, columns _INDEX_COLUMNS) and the compressed blocks."""
    table = run.table
    names = table.column_names
    index: list[list] = []
    blocks: list[str] = []
    for start in range(0, table.num_rows, BLOCK_EPISODES):
        part = table.slice(start, BLOCK_EPISODES)
        messages = part.column("messages").to_pylist() if "messages" in names else [None] * part.num_rows
        tools = part.column("tools").to_pylist() if "tools" in names else [None] * part.num_rows
        breakdowns = (
            part.column("reward_breakdown").to_pylist() if "reward_breakdown" in names else [None] * part.num_rows
        )
        block = _Block()
        for offset in range(part.num_rows):
            row = run.rows[start + offset]
            episode_id = _episode_id(row, start + offset)
            checks = reward_checks(breakdowns[offset])
            entry = _encode_conversation(block, shared, row["domain"], messages[offset], tools[offset])
            entry["checks"] = checks
            block.episodes[episode_id] = entry
            tokens = (
                None
                if row.get("prompt_tokens") is None
                else (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0)
            )
            index.append(
                [
                    episode_id,
                    row["domain"],
                    row["task_id"],
                    row["trial"],
                    row.get("agent"),
                    None if row.get("reward") is None else round(float(row["reward"]), 6),
                    bool(row.get("error")),
                    row.get("termination"),
                    failed_summary(row, checks),
                    row.get("num_steps"),
                    None if row.get("duration_s") is None else round(float(row["duration_s"]), 3),
                    row.get("llm_calls"),
                    tokens,
                    None if row.get("cost_usd") is None else round(float(row["cost_usd"]), 6),
                    row.get("error_cause"),
                    len(blocks),
                ]
            )
        blocks.append(block.encode())
    return index, blocks


def build_report(out_dir: Any, compare: Any = None, path: Any = None) -> Path:
    """Write the report of the run in ``out_dir`` (to ``out_dir/report.html`` unless ``path``); return its path."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    run = load_run(Path(out_dir))
    other = load_run(Path(compare), conversations=False) if compare is not None else None
    shared = _SharedTexts()
    index, blocks = _episodes(run, shared)
    figures = _figures(run, other)
    for items in figures.values():
        for item in items:
            item["svg"] = Markup(item["svg"])
    ks = sorted({int(k) for d in run.summary["domains"].values() for k in d["pass^k"]})
    environment = Environment(
        loader=PackageLoader("rollout", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    page = environment.get_template("report.html.j2").render(
        run=run,
        compare=other,
        meta=_meta(run),
        ks=ks,
        figures=figures,
        mismatch=_summary_mismatch(run),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        summary_json=Markup(_json_for_script({"run": run.summary, "compare": other.summary if other else None})),
        index_json=Markup(_json_for_script({"columns": _INDEX_COLUMNS, "rows": index})),
        shared_json=Markup(_json_for_script(shared.items)),
        blocks=blocks,
    )
    target = Path(path) if path is not None else Path(out_dir) / REPORT_NAME
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target


# -------------------------------------------------------------- the command
def report_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m rollout report",
        description="Write DIR/report.html: the run's summary, figures and conversations in one file.",
    )
    parser.add_argument("dir", help="a rollout's output folder (holding episodes/)")
    parser.add_argument("--compare", metavar="DIR2", help="a second run to put side by side (e.g. before training)")
    parser.add_argument("--output", "-o", help="where to write the page (default: DIR/report.html)")
    return parser


def run_report_command(args: argparse.Namespace) -> int:
    import sys

    try:
        path = build_report(args.dir, compare=args.compare, path=args.output)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
