"""``taugym report DIR``: one HTML file with every episode, figures for every domain and summary.json's numbers."""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rollout.dataset import read_episodes
from rollout.report import _Block, _encode_conversation, _SharedTexts, build_report, reward_checks

try:
    from synthetic_runs import write_synthetic_run
except ImportError:  # pragma: no cover
    from tests.synthetic_runs import write_synthetic_run  # type: ignore

REPO = Path(__file__).resolve().parents[1]
FIGURES_OF_EVERY_DOMAIN = ("pass_k", "grid", "terminations", "distributions")


def page_parts(page: Path) -> dict:
    """What the page holds, read as the browser reads it: its JSON scripts and its gzip blocks inflated."""
    html = page.read_text(encoding="utf-8")

    def script(name: str):
        match = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', html, re.S)
        return json.loads(match.group(1))

    blocks = {}
    for number, text in re.findall(
        r'<script type="application/octet-stream" class="block" id="block-(\d+)">(.*?)</script>', html, re.S
    ):
        blocks[int(number)] = json.loads(gzip.decompress(base64.b64decode(text.strip())))
    index = script("episode-index")
    return {
        "html": html,
        "summary": script("summary-data"),
        "episodes": [dict(zip(index["columns"], row)) for row in index["rows"]],
        "shared": script("shared-texts"),
        "blocks": blocks,
    }


def figures(html: str) -> set[tuple[str, str]]:
    """(domain, figure) of every figure that holds an inline SVG."""
    found = set()
    for match in re.finditer(r'<figure[^>]*data-figure="([a-z_]+)" data-domain="([^"]+)">\s*(<svg)?', html):
        if match.group(3):
            found.add((match.group(2), match.group(1)))
    return found


def conversation(parts: dict, episode: dict) -> list[dict]:
    """An episode's messages rebuilt from the page (system prompt from the domain's shared texts)."""
    block = parts["blocks"][episode["block"]]
    entry = block["e"][episode["id"]]
    text = block["s"]
    messages = []
    if "sys" in entry:
        prompt = parts["shared"][episode["domain"]][entry["sys"]]["text"]
        messages.append({"role": "system", "content": prompt, "tool_calls": None, "tool_call_id": None, "name": None})
    for m in entry["m"]:
        messages.append(
            {
                "role": m["r"],
                "content": text[m["c"]] if "c" in m else None,
                "tool_calls": [(c["i"], c["n"], text[c["a"]]) for c in m.get("t", [])] or None,
                "tool_call_id": m.get("i"),
                "name": m.get("n"),
            }
        )
    return messages


def as_stored(message: dict) -> dict:
    calls = message.get("tool_calls")
    return {
        "role": message["role"],
        "content": message.get("content"),
        "tool_calls": [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] if calls else None,
        "tool_call_id": message.get("tool_call_id"),
        "name": message.get("name"),
    }


def test_report_of_the_default_run_holds_every_episode_every_domain_and_summary_json(tmp_path):
    run = tmp_path / "default"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollout",
            "--config",
            "configs/rollout/default.yaml",
            "--out",
            str(run),
            "--no-progress",
            "tasks=[retail-000, retail-001, retail-002, airline-000, airline-001]",
            "trials=2",
            "actors=1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    shown = subprocess.run(
        [sys.executable, "-m", "rollout", "report", str(run)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    page = run / "report.html"
    assert shown.stdout.strip() == str(page)
    parts = page_parts(page)
    summary_json = json.loads((run / "summary.json").read_text())

    # the numbers are summary.json's, in the data and in the table a person reads
    assert parts["summary"]["run"]["domains"] == summary_json["domains"]
    assert (parts["summary"]["run"]["episodes"], parts["summary"]["run"]["errors"]) == (
        summary_json["episodes"],
        summary_json["errors"],
    )
    for domain, entry in summary_json["domains"].items():
        row = re.search(rf'<tr data-domain="{domain}" data-run="run">(.*?)</tr>', parts["html"], re.S).group(1)
        shown_values = dict(re.findall(r'data-key="([^"]+)">([^<]*)<', row))
        assert shown_values["mean_reward"] == f"{entry['mean_reward']:.3f}"
        for k, value in entry["pass^k"].items():
            assert shown_values[f"pass^{k}"] == f"{value:.3f}"

    # figures for every domain
    assert set(summary_json["domains"]) == {"retail", "airline"}
    for domain in summary_json["domains"]:
        for name in FIGURES_OF_EVERY_DOMAIN:
            assert (domain, name) in figures(parts["html"]), (domain, name)

    # every episode, with its whole conversation
    stored = read_episodes(run).to_pylist()
    assert sorted(e["id"] for e in parts["episodes"]) == sorted(e["episode_id"] for e in stored)
    by_id = {e["id"]: e for e in parts["episodes"]}
    for row in stored:
        episode = by_id[row["episode_id"]]
        assert (episode["domain"], episode["task"], episode["trial"], episode["reward"], episode["termination"]) == (
            row["domain"],
            row["task_id"],
            row["trial"],
            row["reward"],
            row["termination"],
        )
        assert conversation(parts, episode) == [as_stored(m) for m in row["messages"]]
        tools = parts["blocks"][episode["block"]]["e"][row["episode_id"]]["tools"]
        assert json.loads(parts["shared"][row["domain"]][tools]["text"]) == json.loads(row["tools"])
    # the system prompt and the tools are stored once per domain, not once per episode
    assert all(len(items) == 2 for items in parts["shared"].values())

    # it opens anywhere: nothing is fetched at view time
    assert not re.search(r'<(link|img|iframe)\b|\bsrc=|@import|url\(\s*["\']?https?:', parts["html"])


def test_report_of_a_run_with_errors_and_failed_checks_compared_with_another(tmp_path):
    after, before = tmp_path / "after", tmp_path / "before"
    summary_after = write_synthetic_run(after, {"retail": 6, "airline": 5}, trials=3, run_id="after", seed=1)
    summary_before = write_synthetic_run(before, {"retail": 6, "airline": 4}, trials=3, run_id="before", seed=2)
    assert summary_after["errors"] > 0
    console = Path(sys.executable).with_name("taugym")
    shown = subprocess.run(
        [str(console), "report", str(after), "--compare", str(before)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    parts = page_parts(Path(shown.stdout.strip()))

    assert parts["summary"]["run"] == summary_after
    assert parts["summary"]["compare"] == summary_before
    shown_figures = figures(parts["html"])
    for domain, entry in summary_after["domains"].items():
        assert {(domain, "pass_k"), (domain, "task_diff")} <= shown_figures
        assert ((domain, "errors") in shown_figures) == (entry["errors"] > 0)

    stored = {row["episode_id"]: row for row in read_episodes(after).to_pylist()}
    assert len(parts["episodes"]) == len(stored)
    for episode in parts["episodes"]:
        row = stored[episode["id"]]
        checks = parts["blocks"][episode["block"]]["e"][episode["id"]]["checks"]["checks"]
        if row["error"]:
            assert episode["failed"] == "error" and episode["error_cause"] == row["error_cause"]
            continue
        breakdown = json.loads(row["reward_breakdown"])
        failed = {(c["kind"], c["label"]) for c in checks if c["scored"] and not c["ok"]}
        if not breakdown["db_check"]["db_match"]:
            assert ("database", "database hash equals the gold hash") in failed
        for item in breakdown["communicate_checks"]:
            assert (("communicate", item["info"]) in failed) == (not item["met"])
        for item in breakdown["env_assertions"]:
            assert any(kind == "assertion" and "assert_order_status" in label for kind, label in failed) == (
                not item["met"]
            )
        if row["reward"] == 1.0:
            assert episode["failed"] == "" and not failed
        else:
            assert episode["failed"]  # the table says why: the failed kinds, or how it ended
            for kind, _ in failed:
                assert kind in episode["failed"]


def test_checks_of_tau2_and_tau_bench_breakdowns():
    tau2 = reward_checks(
        json.dumps(
            {
                "reward": 0.0,
                "reward_basis": ["DB", "COMMUNICATE"],
                "db_check": {"db_match": True, "db_reward": 1.0},
                "env_assertions": [],
                "nl_assertions": None,
                "action_checks": [
                    {
                        "action": {"name": "cancel_pending_order", "arguments": {"order_id": "#W1"}},
                        "action_match": False,
                    }
                ],
                "communicate_checks": [{"info": "1093.34", "met": False}, {"info": "#W1", "met": True}],
                "reward_breakdown": {"DB": 1.0, "COMMUNICATE": 0.0},
            }
        )
    )
    assert [(c["kind"], c["label"], c["ok"], c["scored"]) for c in tau2["checks"]] == [
        ("database", "database hash equals the gold hash", True, True),
        ("action", 'cancel_pending_order(order_id="#W1")', False, False),  # not in the reward basis: shown, not blamed
        ("communicate", "1093.34", False, True),
        ("communicate", "#W1", True, True),
    ]
    assert tau2["parts"] == {"DB": 1.0, "COMMUNICATE": 0.0}
    v1 = reward_checks({"reward": 0.0, "info": {"r_actions": 0.0, "gt_data_hash": "abc"}, "actions": []})
    assert [(c["kind"], c["ok"]) for c in v1["checks"]] == [("database", False)]
    assert reward_checks("null") == {"checks": [], "parts": {}, "notes": []}


def test_tool_call_arguments_as_json_text_or_as_objects_show_the_same():
    call = {"id": "c1", "type": "function", "function": {"name": "get_order_details", "arguments": {"order_id": "#W1"}}}
    messages = [{"role": "system", "content": "policy"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    as_text = [
        messages[0],
        {
            **messages[1],
            "tool_calls": [{**call, "function": {**call["function"], "arguments": json.dumps({"order_id": "#W1"})}}],
        },
    ]
    encoded = []
    for variant in (messages, as_text):
        block, shared = _Block(), _SharedTexts()
        entry = _encode_conversation(block, shared, "retail", variant, "[]")
        encoded.append(json.loads(block.strings[entry["m"][0]["t"][0]["a"]]))
    assert encoded[0] == encoded[1] == {"order_id": "#W1"}


def test_a_folder_without_episodes_is_refused_with_a_message(tmp_path):
    with pytest.raises(ValueError, match="no episodes dataset"):
        build_report(tmp_path)
    refused = subprocess.run(
        [sys.executable, "-m", "rollout", "report", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "no episodes dataset" in refused.stderr
