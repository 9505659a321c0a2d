WIKI = """# Tiny Shop agent policy (stand-in)

- Authenticate the user by their user id before anything else.
- Only pending orders can be cancelled; the reason must be 'no longer needed' or 'ordered by mistake'.
- Confirm with the user (yes) before cancelling.
- Refunds of delivered orders are handled by humans: transfer the user to a human agent.
"""
