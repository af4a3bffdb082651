"""Shared set-up of the registry tests: a registry in a temporary SQLite file, a controllable
clock, CAs made with certmq.pki and with the openssl command line, and synthetic devices."""

from __future__ import annotations

import contextlib
import datetime
import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import make_url

from certmq import pki
from certmq.registry import CaRecord, RegistryService, open_registry
from certmq.registry.store import NewDevice, RegistryStore

INSTANCE_ID = "mqtt-test-1"


class Clock:
    """The real time, moved forward when a test says so."""

    def __init__(self) -> None:
        self.offset = datetime.timedelta()

    @property
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + self.offset

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.offset += datetime.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- the two databases ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str | None]:
    """A PostgreSQL server URL for the tests, or None when there is none: the one that
    CERTMQ_TEST_POSTGRESQL_URL names, else a throw-away cluster made with initdb and pg_ctl
    (run as the ``postgres`` user when the tests run as root, since PostgreSQL refuses root)."""
    configured = os.environ.get("CERTMQ_TEST_POSTGRESQL_URL")
    if configured:
        yield configured
        return
    # Debian keeps the server programs off PATH, under /usr/lib/postgresql/VERSION/bin.
    search = os.pathsep.join(
        [os.environ.get("PATH", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    )
    initdb, pg_ctl = shutil.which("initdb", path=search), shutil.which("pg_ctl", path=search)
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        as_user = ["runuser", "-u", "postgres", "--"] if owner and shutil.which("runuser") else []
    if not (initdb and pg_ctl) or (os.geteuid() == 0 and not as_user):
        yield None
        return
    # Not under pytest's temporary directory: that one is private to the user running the tests.
    directory = Path(tempfile.mkdtemp(prefix="certmq-pg-"))
    if as_user:
        os.chown(directory, owner.pw_uid, owner.pw_gid)  # type: ignore[union-attr]
    data, port = directory / "data", _free_port()
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "certmq", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {directory} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://certmq@/postgres?host={directory}&port={port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def postgresql_database(server: str, template: str | None = None) -> Iterator[str]:
    """A fresh database on ``server``, dropped afterwards; yields its URL. Empty, or a copy of
    the database ``template`` names (by URL), which no one may be connected to."""
    import psycopg

    name = f"certmq_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(server).set(drivername="postgresql")
    copied = f' TEMPLATE "{make_url(template).database}"' if template else ""
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"{copied}')  # type: ignore[arg-type]
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    """An empty registry: an SQLite file in the data directory, and a PostgreSQL database."""
    if request.param == "sqlite":
        opened = open_registry("", tmp_path)
        yield opened
        opened.close()
        return
    server = request.getfixturevalue("postgresql_server")
    if server is None:
        pytest.fail(
            "no PostgreSQL server: set CERTMQ_TEST_POSTGRESQL_URL or install PostgreSQL (initdb, pg_ctl)"
        )
    with postgresql_database(server) as url:
        opened = open_registry(url)
        yield opened
        opened.close()


@pytest.fixture
async def registry(store: RegistryStore, clock: Clock) -> AsyncIterator[RegistryService]:
    service = RegistryService(store, instance_id=INSTANCE_ID, clock=clock)
    await service.open()
    yield service
    await service.close()


def pem(*certificates: x509.Certificate) -> str:
    return pki.certificates_pem(*certificates).decode()


def make_ca(
    cn: str = "Test Root CA",
    kind: pki.KeyKind = "ec",
    *,
    size: int | None = None,
    issuer: pki.CertifiedKey | None = None,
    serial: int | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> pki.CertifiedKey:
    key = pki.generate_key(kind, size)
    certificate = pki.create_ca(cn, key, issuer, serial=serial, not_before=not_before, not_after=not_after)
    return pki.CertifiedKey(certificate, key)


def make_device(ca: pki.CertifiedKey, cn: str = "device-1", *, serial: int | None = None) -> x509.Certificate:
    return pki.issue_device_certificate(
        ca.certificate, ca.key, cn, pki.generate_key("ec").public_key(), serial=serial
    )


def verification_by_hand(ca: pki.CertifiedKey, code: str, *, days: int = 1) -> x509.Certificate:
    """A verification certificate without certmq.pki's checks, valid for ``days`` from now even
    when the CA is not: for CAs that pki would refuse to issue from (expired ones)."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .issuer_name(ca.certificate.subject)
        .public_key(pki.generate_key("ec").public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(ca.key, hashes.SHA256())
    )


async def register(registry: RegistryService, ca: pki.CertifiedKey, name: str = "") -> CaRecord:
    """Register ``ca`` the way an operator does: a fresh code, a verification certificate."""
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(ca.certificate, ca.key, code.code)
    return await registry.register_ca(name, pem(ca.certificate), pem(verification))


# --- the openssl command line ---------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _new_key_args(kind: str) -> list[str]:
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


@dataclass(frozen=True)
class OpensslCa:
    directory: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.name}.pem"

    @property
    def key(self) -> Path:
        return self.directory / f"{self.name}.key"

    def pem(self) -> str:
        return self.cert.read_text()


def openssl_root_ca(directory: Path, name: str, kind: str = "rsa", *, cn: str | None = None) -> OpensslCa:
    """``openssl req -x509`` with basicConstraints=critical,CA:TRUE."""
    openssl(
        "req", "-x509", *_new_key_args(kind), "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "365", "-subj", f"/CN={cn or name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return OpensslCa(directory, name)


def openssl_leaf(directory: Path, name: str, kind: str = "ec") -> OpensslCa:
    """A self-signed certificate that is not a CA (basicConstraints CA:FALSE)."""
    openssl(
        "req", "-x509", *_new_key_args(kind), "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "365", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:FALSE",
        cwd=directory,
    )  # fmt: skip
    return OpensslCa(directory, name)


def openssl_sign(
    directory: Path,
    issuer: OpensslCa,
    name: str,
    cn: str,
    *,
    kind: str = "ec",
    ca: bool = False,
    pss: bool = False,
) -> OpensslCa:
    """``openssl req -new -subj /CN=...`` then ``openssl x509 -req -CA ... -CAkey ...``: a
    verification certificate (``ca=False``) or an intermediate CA."""
    openssl(
        "req", "-new", *_new_key_args(kind), "-nodes", "-keyout", f"{name}.key", "-subj", f"/CN={cn}",
        "-out", f"{name}.csr",
        cwd=directory,
    )  # fmt: skip
    extra: list[str] = []
    if ca:
        (directory / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        extra += ["-extfile", f"{name}.ext"]
    if pss:
        extra += ["-sigopt", "rsa_padding_mode:pss"]
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", issuer.cert.name, "-CAkey", issuer.key.name,
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "30", *extra,
        cwd=directory,
    )  # fmt: skip
    return OpensslCa(directory, name)


# --- synthetic devices for scale tests ------------------------------------------------------------


def synthetic_devices(ca_sn: str, count: int, *, start: int = 0) -> Iterator[NewDevice]:
    """Distinct device rows with real-looking serials and fingerprints and a stub PEM."""
    begin = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC)
    for number in range(start, start + count):
        digest = hashlib.sha256(ca_sn.encode() + number.to_bytes(8, "big")).digest()
        serial = digest[:20]
        yield NewDevice(
            ca_sn=ca_sn,
            device_sn=("00" + serial.hex()) if serial[0] & 0x80 else serial.hex(),
            name=f"device-{number:07d}",
            pem="-----BEGIN CERTIFICATE-----\nstub\n-----END CERTIFICATE-----\n",
            fingerprint=hashlib.sha256(b"fingerprint" + digest).hexdigest(),
            valid_begin=begin,
            valid_end=end,
        )
