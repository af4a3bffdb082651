"""Sans-io MQTT 3.1.1 and 5.0: packets, decoding and encoding (and the fields both are made of),
properties, reason codes, topics.

Nothing in this package touches a socket, a clock or an event loop.
"""
