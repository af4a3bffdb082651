"""The ``certmq`` command (SPEC 9 and 13): one module per command group."""
