"""Certificates made with the openssl command line, as an operator would make them.

The mutual-TLS tests use these rather than certmq's own PKI commands, to prove that
certificates from the usual tool work just as well.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path


def openssl(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    chain: Path  # certificate + issuing CA, what a device presents

    @property
    def pem(self) -> str:
        return self.cert.read_text()


def _key_args(kind: str) -> list[str]:
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


def make_ca(
    directory: Path, name: str, *, kind: str = "ec", issuer: Issued | None = None, ca: bool = True
) -> Issued:
    """A root CA (or, with ``issuer``, an intermediate). ``ca=False`` makes a look-alike without CA:TRUE."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    constraints = "basicConstraints=critical,CA:TRUE" if ca else "basicConstraints=critical,CA:FALSE"
    usage = "keyUsage=critical,keyCertSign,cRLSign" if ca else "keyUsage=critical,digitalSignature"
    if issuer is None:
        openssl(
            "req", "-x509", *_key_args(kind), "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "365", "-subj", f"/O=certmq tests/CN={name}",
            "-addext", constraints, "-addext", usage, "-addext", "subjectKeyIdentifier=hash",
        )  # fmt: skip
        chain = cert
    else:
        request = directory / f"{name}.csr"
        extensions = directory / f"{name}.ext"
        extensions.write_text(
            f"{constraints}\n{usage}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
        )
        openssl("req", "-new", *_key_args(kind), "-nodes", "-keyout", str(key), "-out", str(request),
                "-subj", f"/O=certmq tests/CN={name}")  # fmt: skip
        openssl("x509", "-req", "-in", str(request), "-CA", str(issuer.cert), "-CAkey", str(issuer.key),
                "-CAcreateserial", "-out", str(cert), "-days", "365", "-extfile", str(extensions))  # fmt: skip
        chain = directory / f"{name}-chain.pem"
        chain.write_text(cert.read_text() + issuer.cert.read_text())
    return Issued(cert, key, chain)


def make_verification(directory: Path, ca: Issued, code: str) -> Path:
    """The proof of possession: a certificate whose CN is the registration code, signed by the CA."""
    key, request, cert = (
        directory / f"verify-{code}.key",
        directory / f"verify-{code}.csr",
        directory / f"verify-{code}.pem",
    )
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(request), "-subj", f"/CN={code}")  # fmt: skip
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-CAcreateserial", "-out", str(cert), "-days", "30")  # fmt: skip
    return cert


def make_device(
    directory: Path,
    ca: Issued,
    name: str,
    *,
    serial: str | None = None,
    days: int = 365,
    not_before: str | None = None,
    not_after: str | None = None,
    extended_key_usage: str = "clientAuth",
    kind: str = "ec",
    digest: str = "sha256",
) -> Issued:
    """A device certificate issued by ``ca``. ``not_before``/``not_after`` take openssl's
    YYYYMMDDHHMMSSZ form and make expired or not-yet-valid certificates; ``digest`` is the one
    its signature uses."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / name
    key, request, cert = stem.with_suffix(".key"), stem.with_suffix(".csr"), stem.with_suffix(".pem")
    extensions = stem.with_suffix(".ext")
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={extended_key_usage}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl("req", "-new", *_key_args(kind), "-nodes", "-keyout", str(key), "-out", str(request),
            "-subj", f"/O=certmq tests/CN={name}")  # fmt: skip
    if not_before or not_after:
        # `openssl ca` is the command that sets arbitrary validity dates.
        database = directory / f"{name}.index"
        database.write_text("")
        serial_file = directory / f"{name}.serial"
        serial_file.write_text((serial or secrets.token_hex(8)) + "\n")
        config = directory / f"{name}.cnf"
        config.write_text(
            "[ca]\ndefault_ca = own\n[own]\n"
            f"database = {database}\nserial = {serial_file}\nnew_certs_dir = {directory}\n"
            "default_md = sha256\npolicy = anything\nunique_subject = no\ncopy_extensions = none\n"
            "[anything]\ncommonName = supplied\norganizationName = optional\n"
        )
        arguments = ["ca", "-batch", "-config", str(config), "-in", str(request), "-out", str(cert),
                     "-cert", str(ca.cert), "-keyfile", str(ca.key), "-extfile", str(extensions), "-notext"]  # fmt: skip
        if not_before:
            arguments += ["-startdate", not_before]
        if not_after:
            arguments += ["-enddate", not_after]
        openssl(*arguments)
    else:
        serial_arguments = ["-set_serial", f"0x{serial}"] if serial else ["-CAcreateserial"]
        openssl("x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key), *serial_arguments,
                "-out", str(cert), "-days", str(days), "-extfile", str(extensions), f"-{digest}")  # fmt: skip
    chain = stem.with_name(f"{name}-chain.pem")
    chain.write_text(cert.read_text() + ca.cert.read_text())
    return Issued(cert, key, chain)
