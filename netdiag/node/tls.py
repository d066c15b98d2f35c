"""TLS bound to the node key: a self-signed certificate whose key IS the node's Ed25519 key.

A dialer checks after the handshake that the server certificate's public key equals the node id
the peer proved in the application handshake, so a man in the middle cannot terminate TLS
without the node's private key. (Python's ssl cannot request a client certificate without also
verifying it against a CA, so the inbound direction relies on the signed-nonce handshake.)
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from netdiag.node.crypto import Identity


def write_certificate(identity: Identity, directory: Path) -> tuple[Path, Path]:
    """(cert, key) PEM files; regenerated on every start so the cert always matches the key."""
    directory.mkdir(parents=True, exist_ok=True)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.node_id.hex())])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(identity.private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(identity.private, algorithm=None)  # Ed25519 signs without a separate digest
    )
    cert_path, key_path = directory / "node.crt", directory / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(identity.private_pem())
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # No CA exists for self-signed node certs: the key is pinned to the node id instead.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    return ctx


def peer_cert_key(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    """Raw Ed25519 public key of the peer's certificate, or None if there is none."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    key = x509.load_der_x509_certificate(der).public_key()
    if not isinstance(key, Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
