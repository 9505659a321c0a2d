from tau_bench.types import Action, Task

TASKS_TEST = [
    Task(
        user_id="ada_lovelace_1815",
        instruction="Your user id is ada_lovelace_1815. You ordered a desk lamp (order #W1001) by mistake and want to cancel it.",
        actions=[
            Action(name="get_order_details", kwargs={"order_id": "#W1001"}),
            Action(name="cancel_pending_order", kwargs={"order_id": "#W1001", "reason": "ordered by mistake"}),
        ],
        outputs=[],
    ),
    Task(
        user_id="alan_turing_1912",
        instruction="Your user id is alan_turing_1912. You want to know the total price of order #W2001. You do not want to change anything.",
        actions=[Action(name="get_order_details", kwargs={"order_id": "#W2001"})],
        outputs=["129.5"],
    ),
    Task(
        user_id="ada_lovelace_1815",
        instruction="Your user id is ada_lovelace_1815. Your pen from order #W1002 arrived broken and you want a refund.",
        actions=[
            Action(name="get_order_details", kwargs={"order_id": "#W1002"}),
            Action(name="transfer_to_human_agents", kwargs={"summary": "refund of a delivered order #W1002"}),
        ],
        outputs=[],
    ),
]

TASKS_TRAIN = [
    Task(
        user_id="alan_turing_1912",
        instruction="Your user id is alan_turing_1912. You no longer need order #W2001 and want to cancel it.",
        actions=[Action(name="cancel_pending_order", kwargs={"order_id": "#W2001", "reason": "no longer needed"})],
        outputs=[],
    ),
    Task(
        user_id="ada_lovelace_1815",
        instruction="Your user id is ada_lovelace_1815. You want to know the status of order #W1002.",
        actions=[Action(name="get_order_details", kwargs={"order_id": "#W1002"})],
        outputs=["delivered"],
    ),
]
