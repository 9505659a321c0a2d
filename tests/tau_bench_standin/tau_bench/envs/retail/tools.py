"""Three tools: a read, a write and the terminate tool."""

import json
from typing import Any, Dict

from tau_bench.envs.tool import Tool


class GetOrderDetails(Tool):
    @staticmethod
    def invoke(data: Dict[str, Any], order_id: str) -> str:
        if order_id not in data["orders"]:
            return "Error: order not found"
        return json.dumps(data["orders"][order_id])

    @staticmethod
    def get_info() -> Dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": "get_order_details",
                "description": "Look up an order: its status, items and prices.",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string", "description": "The order id, e.g. '#W1001'."}},
                    "required": ["order_id"],
                },
            },
        }


class CancelPendingOrder(Tool):
    @staticmethod
    def invoke(data: Dict[str, Any], order_id: str, reason: str) -> str:
        order = data["orders"][order_id]  # an unknown id raises: v1's step reports "Error: ..."
        if order["status"] != "pending":
            return "Error: only a pending order can be cancelled"
        if reason not in ("no longer needed", "ordered by mistake"):
            return "Error: the reason must be 'no longer needed' or 'ordered by mistake'"
        order["status"] = "cancelled"
        order["cancel_reason"] = reason
        return json.dumps(order)

    @staticmethod
    def get_info() -> Dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": "cancel_pending_order",
                "description": "Cancel a pending order. Ask the user to confirm first.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "order_id": {"type": "string", "description": "The order id, e.g. '#W1001'."},
                        "reason": {
                            "type": "string",
                            "enum": ["no longer needed", "ordered by mistake"],
                            "description": "Why the user cancels.",
                        },
                    },
                    "required": ["order_id", "reason"],
                },
            },
        }


class TransferToHumanAgents(Tool):
    @staticmethod
    def invoke(data: Dict[str, Any], summary: str) -> str:
        return "Transfer successful"

    @staticmethod
    def get_info() -> Dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": "transfer_to_human_agents",
                "description": "Hand the user over to a human agent, with a summary of the issue.",
                "parameters": {
                    "type": "object",
                    "properties": {"summary": {"type": "string", "description": "The user's issue."}},
                    "required": ["summary"],
                },
            },
        }


ALL_TOOLS = [GetOrderDetails, CancelPendingOrder, TransferToHumanAgents]
