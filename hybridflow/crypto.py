"""Secrets at rest: tenant API keys and webhook secrets are Fernet-encrypted with HYBRIDFLOW_SECRET_KEY."""

from __future__ import annotations

import hmac

from cryptography.fernet import Fernet, InvalidToken

from hybridflow.errors import ConfigError, HybridFlowError, SecretKeyMissing

HOW_TO_CREATE = (
    "run `hybridflow keys generate` and put the key in HYBRIDFLOW_SECRET_KEY (or secret_key in hybridflow.toml)"
)


class DecryptionFailed(HybridFlowError):
    exit_code = 2
    code = "decryption_failed"


def generate_key() -> str:
    """A new random Fernet key, as text."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Encrypts and decrypts short secrets; without a key it refuses, saying how to make one."""

    def __init__(self, key: str | None) -> None:
        self._fernet: Fernet | None = None
        if key:
            try:
                self._fernet = Fernet(key.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise ConfigError(f"invalid value for 'secret_key': not a Fernet key; {HOW_TO_CREATE}") from None

    @property
    def available(self) -> bool:
        return self._fernet is not None

    def encrypt(self, plain: str) -> str:
        if self._fernet is None:
            raise SecretKeyMissing(f"storing a secret needs an encryption key: {HOW_TO_CREATE}")
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        if self._fernet is None:
            raise SecretKeyMissing(f"reading a stored secret needs the encryption key: {HOW_TO_CREATE}")
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise DecryptionFailed(
                "a stored secret cannot be decrypted with the configured secret_key (was the key changed?)"
            ) from None


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one."""
    if given is None:
        return False
    # surrogatepass: a hostile value that is not valid Unicode is a mismatch, not a crash
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def keyed_reference(secret_key: str | None, purpose: str, value: str) -> str | None:
    """A stable, non-reversible reference to ``value`` for logs: HMAC-SHA256 with a key derived from the secret key
    for this ``purpose`` (a plain hash of a phone number is reversed by trying every number). None without a key."""
    if not secret_key:
        return None
    key = hmac.digest(secret_key.encode("utf-8"), f"hybridflow/{purpose}".encode(), "sha256")
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), "sha256").hexdigest()[:32]
