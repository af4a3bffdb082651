"""The ``certmq`` command (docs/cli.md): one module per command group."""
