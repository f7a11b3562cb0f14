"""Keys derived from ``COMMS_SECRET_KEY``, and the authenticated encryption of TOTP secrets.

One master secret, one derived key per purpose (HKDF-SHA256 with a purpose label), so a key
used for CSRF tokens can never decrypt a TOTP secret. Encryption is AES-256-GCM with a random
96-bit nonce; the user id is bound as associated data, so a ciphertext copied onto another
user's row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

_VERSION = "v1"


class SecretBoxError(Exception):
    """A ciphertext did not decrypt (wrong key, tampered, or for another user)."""


class Keys:
    """Purpose-bound keys. Build once per process from the configured secret."""

    def __init__(self, secret_key: str) -> None:
        if len(secret_key) < 32:
            raise ValueError("COMMS_SECRET_KEY must be at least 32 characters")
        master = secret_key.encode("utf-8")
        self.totp = self._derive(master, b"comms totp-secret encryption v1")
        self.csrf = self._derive(master, b"comms csrf tokens v1")
        self.recovery = self._derive(master, b"comms recovery codes v1")
        self.device = self._derive(master, b"comms device cookies v1")

    @staticmethod
    def _derive(master: bytes, label: bytes) -> bytes:
        key = HKDF(master, 32, b"incident-comms", SHA256, context=label)
        assert isinstance(key, bytes)
        return key

    def encrypt(self, plaintext: str, *, associated: str) -> str:
        nonce = secrets.token_bytes(12)
        cipher = AES.new(self.totp, AES.MODE_GCM, nonce=nonce)
        cipher.update(associated.encode("utf-8"))
        body, tag = cipher.encrypt_and_digest(plaintext.encode("utf-8"))
        blob = base64.urlsafe_b64encode(nonce + body + tag).decode("ascii")
        return f"{_VERSION}:{blob}"

    def decrypt(self, token: str, *, associated: str) -> str:
        version, _, blob = token.partition(":")
        if version != _VERSION:
            raise SecretBoxError("unknown ciphertext version")
        try:
            raw = base64.urlsafe_b64decode(blob.encode("ascii"))
            nonce, body, tag = raw[:12], raw[12:-16], raw[-16:]
            cipher = AES.new(self.totp, AES.MODE_GCM, nonce=nonce)
            cipher.update(associated.encode("utf-8"))
            return bytes(cipher.decrypt_and_verify(body, tag)).decode("utf-8")
        except (ValueError, KeyError) as exc:
            raise SecretBoxError("ciphertext does not verify") from exc

    def mac(self, key: bytes, message: str) -> str:
        return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
