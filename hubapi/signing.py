"""Signing commands: JWS compact serialization, Ed25519, with a ``kid`` header.

The algorithm is the fully specified ``Ed25519`` (RFC 9864), not the polymorphic ``EdDSA``: hubs
accept exactly this one algorithm. joserfc refuses Ed25519 in its default registry, hence the
explicit :data:`REGISTRY`.

Backend keys: the backend keeps the private key; each hub is configured with the public key
under the same ``kid`` (PEM, or the raw 32 bytes in base64url as printed by :func:`public_key_text`).
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from hubapi.models import CommandClaims

#: The one JWS algorithm of the hub API.
ALGORITHM = "Ed25519"
#: A registry that knows only :data:`ALGORITHM` (never ``none``, never an HMAC algorithm).
REGISTRY = JWSRegistry(algorithms=[ALGORITHM])


class KeyFormatError(ValueError):
    """A key could not be read (wrong format, wrong type, wrong length)."""


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key for signing commands."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM (unencrypted) of ``key``; store it like any other secret."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of the public half, as a hub config accepts it."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw public key in base64url without padding (43 characters), as a hub config accepts it."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_private_key(pem: bytes | str) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from PKCS#8 PEM."""
    try:
        key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a readable unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    """Read an Ed25519 public key from PEM or from raw base64url (32 bytes)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise KeyFormatError(f"not a readable PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(f"expected an Ed25519 public key, got {type(key).__name__}")
        return key
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise KeyFormatError("neither PEM nor base64url") from None
    if len(raw) != 32:
        raise KeyFormatError(f"raw Ed25519 public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(claims: CommandClaims, private_key: Ed25519PrivateKey, kid: str) -> str:
    """The command as a compact JWS: this string (UTF-8) is the MQTT payload."""
    header = {"alg": ALGORITHM, "kid": kid, "typ": "hubcmd+jws"}
    payload = claims.model_dump_json(exclude_none=True).encode()
    return jws.serialize_compact(header, payload, OKPKey.import_key(private_key), registry=REGISTRY)
