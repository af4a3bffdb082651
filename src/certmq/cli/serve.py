"""``certmq serve``: run an instance until SIGTERM or SIGINT; SIGHUP reloads what can be reloaded
without dropping a session (docs/configuration.md, "Reloading")."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certmq import __version__
from certmq.cli.errors import CommandError
from certmq.cli.init import DEFAULT_DATA_DIR, summary
from certmq.cli.logs import configure_logging
from certmq.cli.worker_supervisor import SupervisorChannel, WorkerSupervisor, check_ports_free
from certmq.config import (
    CONFIG_FILE_NAME,
    LOG_FORMATS,
    LOG_LEVELS,
    Config,
    ConfigError,
    check_cluster,
    check_workers,
    load_config,
    node_name,
)
from certmq.instance import Instance, init_instance, is_initialised, load_instance

if TYPE_CHECKING:
    from certmq.app import Application

log = logging.getLogger("certmq")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
STOP_TIMEOUT = 30.0  # seconds for a graceful stop before the process gives up waiting
# New objects between two collections of the cyclic collector's youngest generation (Python's
# default: 700). A first-time device's registration keeps a few dozen objects alive until its
# batch is written (up to 200 ms): collected every 700 new objects, they were traversed and
# promoted again and again, 12 to 16 µs of collections per first-time device on the event loop
# against about 6 (bench/auth_path.py). Connections themselves are freed by reference counting.
YOUNG_GENERATION_THRESHOLD = 10_000


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the broker",
        description="Run the instance in DIR until SIGTERM or SIGINT. SIGHUP reads the configuration "
        "again and reloads the topic rules, the server certificate files and the log settings, "
        "keeping every session. When DIR holds no instance yet, "
        "one is created first (as certmq init does) and the server CA's path is printed.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="configuration file (default: DIR/certmq.toml)")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                        help="the instance's data directory (default: ./data)")  # fmt: skip
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="text, or one JSON object per line; wins over log.format (default: text)")  # fmt: skip
    parser.add_argument("--log-level", choices=LOG_LEVELS,
                        help="wins over log.level, also on SIGHUP (default: info)")  # fmt: skip
    parser.add_argument("--demo", action="store_true", default=os.environ.get("CERTMQ_DEMO", "") == "true",
                        help="on an instance with no CA registered, register a demo device CA and issue one "
                        "device certificate under DIR/demo (what `make run` does; env CERTMQ_DEMO=true)")  # fmt: skip
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default=os.environ.get("CERTMQ_EVENT_LOOP", "auto"),
                        help="auto: uvloop when installed, else asyncio (env CERTMQ_EVENT_LOOP)")  # fmt: skip
    parser.add_argument("--workers", type=_worker_count, default=1, metavar="N",
                        help="run N processes of this node sharing its listening ports, as a cluster on this "
                        "machine (needs cluster.nats_servers and a PostgreSQL storage.url; docs/cluster.md). "
                        "Default: 1, a single process")  # fmt: skip
    # Given to each worker by the supervisor of `--workers N` (certmq.cli.worker_supervisor):
    # its number, and its end of the socket pair that joins them.
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def _worker_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes, 1 or more, got {text!r}")
    return int(text)


def _worker_options(args: argparse.Namespace, data_dir: Path, number: int) -> list[str]:
    """The options of ``certmq serve`` that worker ``number`` of ``--workers N`` runs with: the
    supervisor's own. The demo CA is registered by the first worker alone."""
    options = ["--data-dir", str(data_dir), "--event-loop", args.event_loop]
    if args.config is not None:
        options += ["--config", str(args.config.absolute())]
    if args.log_format is not None:
        options += ["--log-format", args.log_format]
    if args.log_level is not None:
        options += ["--log-level", args.log_level]
    if args.demo and number == 1:
        options.append("--demo")
    return options


@dataclass(frozen=True, slots=True)
class LogSettings:
    """What the process logs: ``[log]``, unless the command line says otherwise. A worker of
    ``--workers N`` writes its node's name in each line: the workers share one standard error."""

    level: str
    format: str
    node: str = ""

    @classmethod
    def of(cls, args: argparse.Namespace, config: Config) -> LogSettings:
        node = node_name(config) if args.worker is not None else ""
        return cls(args.log_level or config.log.level, args.log_format or config.log.format, node)

    def apply(self) -> None:
        configure_logging(self.format, self.level, self.node)


def run(args: argparse.Namespace) -> int:
    # Until the configuration is read: the command line's settings, or the environment's.
    configure_logging(
        args.log_format or os.environ.get("CERTMQ_LOG_FORMAT", "text"),
        args.log_level or os.environ.get("CERTMQ_LOG_LEVEL", "info"),
    )
    data_dir: Path = args.data_dir.absolute()
    if not is_initialised(data_dir):
        result = init_instance(data_dir)
        if result is not None:
            print(summary(result), flush=True)
    config = load_config(data_dir, args.config)
    check_cluster(config)
    LogSettings.of(args, config).apply()
    if args.workers > 1:
        return supervise(args, config, data_dir)
    if (args.worker is None) != (args.supervisor_fd is None):
        raise CommandError("--worker and --supervisor-fd are given to workers by `certmq serve --workers N`")
    supervisor = None if args.supervisor_fd is None else SupervisorChannel(args.supervisor_fd, args.worker)
    instance = load_instance(data_dir, config, args.config)
    # The broker reads [tls] itself: hand it the paths resolved against the data directory.
    if config.tls.cert_file:
        config.tls.cert_file = str(instance.server_cert_file)
        config.tls.key_file = str(instance.server_key_file)
    log.info(
        "certmq %s: instance %s, auth mode %s, data directory %s",
        __version__, instance.id, config.instance.auth_mode, data_dir,
    )  # fmt: skip
    log.info("server CA for clients: %s", instance.server_ca_file)
    if config.auth.anonymous:
        log.warning("anonymous clients are allowed (auth.anonymous = true)")
    reloader = Reloader(args, data_dir)
    return run_event_loop(
        lambda: serve(config, instance, demo=args.demo, reloader=reloader, supervisor=supervisor),
        args.event_loop,
    )


def supervise(args: argparse.Namespace, config: Config, data_dir: Path) -> int:
    """``--workers N``: run N workers of the node and pass them the signals, until SIGTERM or
    SIGINT (certmq.cli.worker_supervisor)."""
    check_workers(config, args.workers)
    check_ports_free(config)
    node = node_name(config)
    log.info("certmq %s: node %s, %d workers, data directory %s", __version__, node, args.workers, data_dir)

    def command(number: int, channel: int) -> list[str]:
        worker = ["--worker", str(number), "--supervisor-fd", str(channel)]
        return [sys.executable, "-m", "certmq", "serve", *_worker_options(args, data_dir, number), *worker]

    # --demo is given to the first worker alone, whatever CERTMQ_DEMO says.
    environment = {name: value for name, value in os.environ.items() if name != "CERTMQ_DEMO"}
    # A worker's own graceful stop takes up to STOP_TIMEOUT.
    supervisor = WorkerSupervisor(args.workers, node, command, environment, STOP_TIMEOUT + 10)
    return asyncio.run(supervisor.run())


def run_event_loop(main: Callable[[], Coroutine[Any, Any, int]], event_loop: str = "auto") -> int:
    """Run ``main`` on uvloop (``auto``: when it is installed) or the standard asyncio loop."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise CommandError("--event-loop uvloop: uvloop is not installed") from None
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main())
    return asyncio.run(main())


class Reloader:
    """SIGHUP: read the configuration file again, apply the log settings and hand the rest to
    :meth:`certmq.app.Application.reload`. A configuration that does not load changes nothing."""

    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.data_dir = data_dir
        self._lock = asyncio.Lock()

    async def reload(self, application: Application) -> None:
        async with self._lock:  # one reload at a time, however fast the signals come
            config_file = self.args.config or self.data_dir / CONFIG_FILE_NAME
            log.info("SIGHUP: reloading %s, the topic rules and the server certificate", config_file)
            try:
                config = load_config(self.data_dir, self.args.config)
            except ConfigError as error:
                log.error("SIGHUP: the configuration was not reloaded, nothing changed: %s", error)
                return
            before, after = LogSettings.of(self.args, application.config), LogSettings.of(self.args, config)
            if after != before:
                after.apply()
                log.info(
                    "log level %s, format %s (before: %s, %s)",
                    after.level,
                    after.format,
                    before.level,
                    before.format,
                )
            application.config.log = config.log
            await application.reload(config)
            log.info("SIGHUP: reload done")


async def serve(
    config: Config,
    instance: Instance,
    *,
    demo: bool = False,
    reloader: Reloader | None = None,
    supervisor: SupervisorChannel | None = None,
) -> int:
    """Start the broker, reload on SIGHUP, wait for SIGTERM or SIGINT, stop it; the exit status.
    A worker of ``--workers N`` (``supervisor`` given) shares its ports with the other workers,
    tells its supervisor when it is ready, and stops when the supervisor is gone."""
    from certmq.app import Application
    from certmq.broker.checkpoint_store import StateStoreError
    from certmq.registry.errors import RegistryUnreachable

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(signal_number: int) -> None:
        if stopping.is_set():
            # A second signal while stopping: the operator does not want to wait.
            log.warning("%s again: exiting without a graceful stop", signal.Signals(signal_number).name)
            os._exit(1)
        log.info("%s: stopping", signal.Signals(signal_number).name)
        stopping.set()

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, on_signal, signal_number)

    application = Application(
        config, instance, demo=demo, worker=0 if supervisor is None else supervisor.number
    )
    ready = False

    def on_hangup() -> None:
        if not ready or stopping.is_set() or reloader is None:
            log.info("SIGHUP while %s: ignored", "stopping" if stopping.is_set() else "starting")
            return
        task = loop.create_task(reloader.reload(application))
        task.add_done_callback(_log_reload_failure)

    # Without a handler SIGHUP would end the process at once, unsaved.
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await application.start()
    except (StateStoreError, RegistryUnreachable) as error:
        log.error("%s", error)
        await application.stop()
        return 1
    except OSError as error:
        log.error("cannot start the listeners: %s", error)
        await application.stop()
        return 1
    # What start-up built (libraries, the registry index: up to millions of objects) lives as
    # long as the process: keep it out of the cyclic collector's generations, whose full
    # passes over it would otherwise cost more than routing the messages.
    gc.collect()
    gc.freeze()
    # See YOUNG_GENERATION_THRESHOLD.
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
    ready = True
    log.info("ready")
    if supervisor is not None:
        supervisor.report_ready(application.listening())

        def on_supervisor_gone() -> None:
            if not stopping.is_set():
                log.warning("the supervisor is gone: stopping")
                stopping.set()

        supervisor.on_supervisor_gone(on_supervisor_gone)
    await stopping.wait()
    try:
        await asyncio.wait_for(application.stop(), STOP_TIMEOUT)
    except TimeoutError:
        log.warning("the broker did not stop within %.0f s; exiting anyway", STOP_TIMEOUT)
    log.info("stopped")
    sys.stdout.flush()
    return 0


def _log_reload_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("SIGHUP: the reload failed", exc_info=task.exception())
