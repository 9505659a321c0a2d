"""Backends: the benchmark packages TauGym runs on. One module each; what they share is in ``base``."""

from __future__ import annotations

import contextlib
import io

from taugym.backends.base import Backend


def get_backend(name: str) -> Backend:
    """The backend called ``name`` ("tau2" or "tau_bench")."""
    if name == "tau2":
        from loguru import logger

        logger.disable("tau2")  # tau2 logs its registry at import; Backend.set_verbose speaks again
        with contextlib.redirect_stdout(io.StringIO()):  # and prints at import
            from taugym.backends.tau2_backend import Tau2Backend

        return Tau2Backend()
    if name == "tau_bench":
        from taugym.backends.tau_bench_backend import TauBenchBackend

        return TauBenchBackend()
    raise ValueError(f"backend must be 'tau2' or 'tau_bench', got {name!r}")
