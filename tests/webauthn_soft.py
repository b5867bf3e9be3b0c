"""A software WebAuthn authenticator for the tests that have no browser (the browser
tests use Chromium's own virtual authenticator). It makes real P-256 credentials and
signs real assertions, with "none" attestation, so the server's py_webauthn checks run
unchanged: origin, RP ID hash, challenge, flags, signature and the signature counter."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftCredential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    def copy(self, sign_count: int = 0) -> SoftCredential:
        """A clone of this credential (same key), with its own counter."""
        return SoftCredential(self.credential_id, self.key, self.rp_id, self.user_handle,
                              sign_count)


@dataclass
class SoftAuthenticator:
    origin: str
    credentials: list[SoftCredential] = field(default_factory=list)
    user_verified: bool = True

    def _flags(self, extra: int = 0) -> int:
        return UP | (UV if self.user_verified else 0) | extra

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge,
                           "origin": origin or self.origin, "crossOrigin": False}).encode()

    def new_credential(self, rp_id: str, user_handle: bytes) -> tuple[SoftCredential, bytes]:
        """A new credential it holds, and its COSE public key."""
        key = ec.generate_private_key(ec.SECP256R1())
        cred = SoftCredential(os.urandom(16), key, rp_id, user_handle)
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})
        self.credentials.append(cred)
        return cred, cose

    def create(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        """Answer ``navigator.credentials.create`` options (JSON form)."""
        rp_id = options["rp"]["id"]
        cred, cose = self.new_credential(rp_id, unb64url(options["user"]["id"]))
        self.credentials.remove(cred)
        attested = (b"\0" * 16 + struct.pack(">H", len(cred.credential_id))
                    + cred.credential_id + cose)
        auth_data = (hashlib.sha256(rp_id.encode()).digest()
                     + bytes([self._flags(AT)]) + struct.pack(">I", 0) + attested)
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        self.credentials.append(cred)
        return {
            "id": b64url(cred.credential_id), "rawId": b64url(cred.credential_id),
            "type": "public-key", "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(cbor2.dumps(
                    {"fmt": "none", "attStmt": {}, "authData": auth_data})),
                "transports": ["internal"],
            },
        }

    def get(self, options: dict[str, Any], *, origin: str | None = None,
            credential: SoftCredential | None = None) -> dict[str, Any]:
        """Answer ``navigator.credentials.get`` options with a credential it holds."""
        allowed = {unb64url(c["id"]) for c in options.get("allowCredentials") or []}
        cred = credential or next(
            (c for c in self.credentials
             if c.rp_id == options["rpId"] and (not allowed or c.credential_id in allowed)),
            None)
        if cred is None:
            raise LookupError("no credential for these options")
        cred.sign_count += 1
        auth_data = (hashlib.sha256(cred.rp_id.encode()).digest()
                     + bytes([self._flags()]) + struct.pack(">I", cred.sign_count))
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = cred.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64url(cred.credential_id), "rawId": b64url(cred.credential_id),
            "type": "public-key", "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(cred.user_handle),
            },
        }
