"""Cryptographic core: streaming blob encryption, key wrapping, the keyring.

Pure Python on top of ``cryptography``; no Flask or database imports.
"""

from app.crypto.keyring import (
    Keyring,
    KeyringError,
    ensure_levels_in_file,
    keyring_lock,
    load_or_create,
)
from app.crypto.stream import (
    FORMAT_VERSION,
    IntegrityError,
    StreamDecryptor,
    StreamEncryptor,
    WrongKeyError,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    new_data_key,
    plaintext_size_from_ciphertext,
)
from app.crypto.wrap import key_wrap_aad, seal, unseal, unwrap_key, wrap_key

__all__ = [
    "FORMAT_VERSION",
    "IntegrityError",
    "Keyring",
    "KeyringError",
    "StreamDecryptor",
    "StreamEncryptor",
    "WrongKeyError",
    "ciphertext_size",
    "decrypt_stream",
    "encrypt_stream",
    "ensure_levels_in_file",
    "key_wrap_aad",
    "keyring_lock",
    "load_or_create",
    "new_data_key",
    "plaintext_size_from_ciphertext",
    "seal",
    "unseal",
    "unwrap_key",
    "wrap_key",
]
