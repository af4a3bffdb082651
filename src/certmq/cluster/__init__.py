"""Several certmq nodes as one broker, over NATS (messages, control) and PostgreSQL (the registry).

How to run one, what is shared where and what happens when a part goes away: docs/cluster.md.
"""
