"""``python -m certmq`` runs the ``certmq`` command."""

from certmq.cli.main import main

raise SystemExit(main())
