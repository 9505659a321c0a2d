"""Stand-in for tau-bench v1's ``tau_bench`` package (a test fixture; see ../README.md)."""

from tau_bench.envs.base import Env as Env
