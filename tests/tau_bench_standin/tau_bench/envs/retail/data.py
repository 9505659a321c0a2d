"""The made-up shop's data. ``load_data`` returns a fresh copy each time, as v1 reloads its JSON."""

import copy
from typing import Any, Dict

_DATA: Dict[str, Any] = {
    "users": {
        "ada_lovelace_1815": {
            "name": {"first_name": "Ada", "last_name": "Lovelace"},
            "email": "ada@example.com",
            "orders": ["#W1001", "#W1002"],
        },
        "alan_turing_1912": {
            "name": {"first_name": "Alan", "last_name": "Turing"},
            "email": "alan@example.com",
            "orders": ["#W2001"],
        },
    },
    "orders": {
        "#W1001": {
            "order_id": "#W1001",
            "user_id": "ada_lovelace_1815",
            "status": "pending",
            "items": [{"name": "Desk Lamp", "price": 45.5}],
        },
        "#W1002": {
            "order_id": "#W1002",
            "user_id": "ada_lovelace_1815",
            "status": "delivered",
            "items": [{"name": "Notebook", "price": 12.0}, {"name": "Pen", "price": 3.25}],
        },
        "#W2001": {
            "order_id": "#W2001",
            "user_id": "alan_turing_1912",
            "status": "pending",
            "items": [{"name": "Chess Set", "price": 89.5}, {"name": "Teapot", "price": 40.0}],
        },
    },
}


def load_data() -> Dict[str, Any]:
    return copy.deepcopy(_DATA)
