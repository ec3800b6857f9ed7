"""A private certificate authority and a server certificate for a local service, as PEM files.

Made with `cryptography` (not the JDK's keytool): the files come out as PEM, which Kafka reads
directly (`ssl.keystore.type=PEM`) and the Python clients take as `ssl_cafile`, with no
keystore passwords to make up and store, and no JVM started per step. The CA's private key
is never written: once the server certificate is signed, nobody can mint another one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class ServerTls:
    """`ca_cert`: what clients trust. `keystore`: the server's key (PKCS#8) and certificate
    chain in one PEM file, readable by the owner only."""

    ca_cert: Path
    keystore: Path


def server_tls_files(folder: Path) -> ServerTls:
    return ServerTls(ca_cert=folder / "ca.crt", keystore=folder / "server.pem")


def needs_new_certificate(files: ServerTls, now: dt.datetime | None = None) -> bool:
    """True when the files are missing or the server certificate expires within a week."""
    from cryptography import x509

    if not (files.ca_cert.is_file() and files.keystore.is_file()):
        return True
    certificates = x509.load_pem_x509_certificates(files.keystore.read_bytes())
    expires = min(c.not_valid_after_utc for c in certificates)
    return expires - (now or dt.datetime.now(dt.UTC)) < RENEW_BEFORE


def make_server_tls(
    folder: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 365
) -> ServerTls:
    """Write a new CA certificate and a server certificate for `hosts` (names or IPs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"finsentry local CA {now:%F}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = server_tls_files(folder)
    pem = serialization.Encoding.PEM
    key = server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(files.keystore, key + server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    return files


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a file that only its owner can read, from the first byte."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
