"""Private keys: the two families certmq issues and accepts, EC (P-256, P-384) and RSA (2048 bits
or more)."""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certmq.pki.errors import UnsupportedKeyError

KeyKind = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

KEY_KINDS: tuple[KeyKind, ...] = ("ec", "rsa")
EC_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1()}
MINIMUM_RSA_BITS = 2048


def generate_key(kind: KeyKind = "ec", size: int | None = None) -> PrivateKey:
    """A new private key: EC on P-256 (``size`` 256, the default) or P-384 (384), or RSA with
    ``size`` bits (default 2048, at least 2048)."""
    if kind == "ec":
        curve = EC_CURVES.get(size or 256)
        if curve is None:
            raise UnsupportedKeyError(f"EC key size {size} is not supported; use 256 (P-256) or 384 (P-384)")
        return ec.generate_private_key(curve)
    if kind == "rsa":
        bits = size or MINIMUM_RSA_BITS
        if bits < MINIMUM_RSA_BITS:
            raise UnsupportedKeyError(f"RSA key size {bits} is too small; use at least {MINIMUM_RSA_BITS}")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise UnsupportedKeyError(f"key kind {kind!r} is not supported; use 'ec' or 'rsa'")


def check_public_key(key: object) -> PublicKey:
    """``key`` if it is an RSA (>= 2048 bits) or EC P-256/P-384 public key, else UnsupportedKeyError."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MINIMUM_RSA_BITS:
            raise UnsupportedKeyError(
                f"RSA key of {key.key_size} bits; at least {MINIMUM_RSA_BITS} are required"
            )
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise UnsupportedKeyError(f"EC curve {key.curve.name} is not supported; use P-256 or P-384")
        return key
    raise UnsupportedKeyError(f"{type(key).__name__} is not supported; use an RSA or EC (P-256, P-384) key")


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """The digest to sign with: SHA-384 for P-384 keys (matching strength), SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()
