"""Fernet round trip of tenant secrets: SecretBox alone, no database (at rest: tests/db/test_secrets_at_rest.py)."""

from __future__ import annotations

import pytest

from hybridflow.crypto import DecryptionFailed, SecretBox, generate_key
from hybridflow.errors import ConfigError, SecretKeyMissing

PLAIN_KEY = "493ED0BEB1A8-47F2-A6EE-731DBFDB99D2"


# --- SecretBox ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plain", [PLAIN_KEY, "chave secreta com acentuação ✓", "x" * 2000])
def test_round_trip(plain):
    box = SecretBox(generate_key())
    token = box.encrypt(plain)
    assert plain not in token
    assert box.decrypt(token) == plain


def test_the_same_secret_encrypts_differently_each_time():
    box = SecretBox(generate_key())
    assert box.encrypt(PLAIN_KEY) != box.encrypt(PLAIN_KEY)


def test_wrong_key_fails_with_decryption_failed():
    token = SecretBox(generate_key()).encrypt(PLAIN_KEY)
    with pytest.raises(DecryptionFailed) as caught:
        SecretBox(generate_key()).decrypt(token)
    assert PLAIN_KEY not in caught.value.message


def test_tampered_token_fails_with_decryption_failed():
    box = SecretBox(generate_key())
    token = box.encrypt(PLAIN_KEY)
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(DecryptionFailed):
        box.decrypt(tampered)


@pytest.mark.parametrize("use", ["encrypt", "decrypt"])
def test_no_key_refuses_and_says_how_to_create_one(use):
    box = SecretBox(None)
    assert not box.available
    with pytest.raises(SecretKeyMissing) as caught:
        getattr(box, use)("anything")
    assert "hybridflow keys generate" in caught.value.message
    assert "HYBRIDFLOW_SECRET_KEY" in caught.value.message


def test_a_key_that_is_not_a_fernet_key_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        SecretBox("not-a-fernet-key")
    assert "secret_key" in caught.value.message and "hybridflow keys generate" in caught.value.message
