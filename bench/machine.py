"""Facts about the machine and the software, recorded with every result."""

from __future__ import annotations

import os
import platform
import re
import ssl
import subprocess
from pathlib import Path


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    match = re.search(r"^Model name:\s*(.+)$", _run(["lscpu"]), re.MULTILINE)
    if match:
        return match.group(1).strip()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def python_facts(python: str) -> dict[str, str]:
    """Versions in the broker's environment: Python, uvloop, and the OpenSSL that certmq's MQTT
    over TLS listener uses (pyOpenSSL's, shipped with ``cryptography``; not the system's)."""
    script = (
        "import sys, importlib.metadata as m\n"
        "print(sys.version.split()[0])\n"
        "try:\n    print(m.version('uvloop'))\nexcept m.PackageNotFoundError:\n    print('not installed')\n"
        "try:\n    from OpenSSL import SSL\n    print(SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode())\n"
        "except ImportError:\n    print('unknown')\n"
    )
    lines = [*_run([python, "-c", script]).splitlines(), "unknown", "unknown", "unknown"]
    return {"python": lines[0], "uvloop": lines[1], "certmq_openssl": lines[2]}


def git_commit(root: Path) -> str:
    commit = _run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    if commit and _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "src"]):
        commit += " (src modified)"
    return commit or "unknown"


def facts(python: str, root: Path) -> dict[str, str]:
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "openssl": ssl.OPENSSL_VERSION,
        "gcc": _run(["gcc", "-dumpfullversion"]) or "unknown",
        "certmq_commit": git_commit(root),
        **python_facts(python),
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
