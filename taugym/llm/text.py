"""Text that enters TauGym from outside (model replies, agents' actions) made storable.

A model can reply with an unpaired UTF-16 surrogate (``"\\ud800"``): valid in a
Python ``str``, but not encodable as UTF-8, so every Parquet or JSON writer
downstream would raise on it. :func:`valid_unicode` is applied where text
enters the env, so nothing a model says can stop a job.
"""

from __future__ import annotations

from typing import Any


def valid_unicode(text: str) -> str:
    """``text`` with each unpaired surrogate replaced by U+FFFD; pairs are joined, the rest kept."""
    try:
        text.encode("utf-8")
        return text  # the common case, at the cost of one encode
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def valid_unicode_deep(value: Any) -> Any:
    """:func:`valid_unicode` applied to every string in nested dicts and lists."""
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, dict):
        return {valid_unicode_deep(k): valid_unicode_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(valid_unicode_deep(v) for v in value)
    return value
