"""A tool: a class with static ``invoke(data, **kwargs) -> str`` and ``get_info() -> schema``."""

from typing import Any


class Tool:
    @staticmethod
    def invoke(*args: Any, **kwargs: Any) -> str:
        raise NotImplementedError

    @staticmethod
    def get_info() -> dict:
        raise NotImplementedError
