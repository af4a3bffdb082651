"""Sans-io MQTT 3.1.1 and 5.0: packets, codec, properties, reason codes, topics.

Nothing in this package touches a socket, a clock or an event loop.
"""
