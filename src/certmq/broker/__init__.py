"""The asyncio broker: listeners, the connection loop, sessions, routing, retained messages, wills."""
