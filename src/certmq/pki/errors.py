"""Exceptions raised by :mod:`certmq.pki`. Each message says what was wrong and what to do."""

from __future__ import annotations


class PkiError(Exception):
    """Base class of every error raised by :mod:`certmq.pki`."""


class UnsupportedKeyError(PkiError, ValueError):
    """A key type or size that certmq does not issue or accept (RSA >= 2048, EC P-256 or P-384)."""


class InvalidNameError(PkiError, ValueError):
    """A Subject CN or subject alternative name that cannot be put into a certificate."""


class NotACertificateAuthorityError(PkiError):
    """A certificate used as an issuer lacks basicConstraints CA:TRUE or the keyCertSign key usage."""


class KeyMismatchError(PkiError):
    """A private key does not belong to the certificate it was paired with."""


class PemFileError(PkiError):
    """A file that should hold PEM certificates or a PEM private key is missing or unreadable."""


class RefusingToOverwriteError(PkiError, FileExistsError):
    """A file that would be written already exists; nothing was written."""
