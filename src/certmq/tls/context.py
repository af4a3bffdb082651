"""Server TLS contexts in generations.

Every accepted connection asks for :meth:`ServerContexts.current` and handshakes with the
newest generation, so a replaced server certificate (or, later, a changed CA set) applies to
the next handshake without a restart while live connections keep the context they began with.
Contexts are built in a worker thread: loading keys and CA files must not stall the loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("certmq.tls")


class ServerCertificateError(Exception):
    """The server certificate or key cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class ContextGeneration:
    number: int
    context: ssl.SSLContext
    cert_file: Path
    key_file: Path


def build_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as error:
        raise ServerCertificateError(
            f"cannot use server certificate {cert_file} with key {key_file}: {error}"
        ) from error
    return context


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class ServerContexts:
    """The current server TLS context and how to replace it."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self._generation = ContextGeneration(
            1, build_server_context(cert_file, key_file), cert_file, key_file
        )
        self._stamps = (_file_stamp(cert_file), _file_stamp(key_file))
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def generation(self) -> ContextGeneration:
        return self._generation

    def current(self) -> ssl.SSLContext:
        return self._generation.context

    async def replace(self, cert_file: Path, key_file: Path) -> ContextGeneration:
        """Build a context from new files and make it current for the next handshakes."""
        context = await asyncio.to_thread(build_server_context, cert_file, key_file)
        self._generation = ContextGeneration(self._generation.number + 1, context, cert_file, key_file)
        self._stamps = (_file_stamp(cert_file), _file_stamp(key_file))
        log.info("server certificate %s in use (generation %d)", cert_file, self._generation.number)
        return self._generation

    def watch(self, interval: float = 2.0) -> None:
        """Reload the certificate when its files change on disk."""
        if self._watch_task is None:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(interval))

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            generation = self._generation
            stamps = (_file_stamp(generation.cert_file), _file_stamp(generation.key_file))
            if stamps == self._stamps or None in stamps:
                continue
            try:
                await self.replace(generation.cert_file, generation.key_file)
            except ServerCertificateError as error:
                # Often a half-written pair (certificate replaced, key not yet): try again next tick.
                log.warning("%s; keeping the certificate in use", error)

    def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
