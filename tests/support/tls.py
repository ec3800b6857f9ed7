"""A throwaway certificate authority and a node certificate for `localhost`, for TLS tests.

Made by the product's own `services/tls.py` (the local Kafka broker's CA); Elasticsearch
wants the node's certificate and key as separate files, so the keystore is split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finsentry.services.tls import make_server_tls

_BEGIN = b"-----BEGIN "


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA certificate clients trust, and the node's certificate and key."""

    ca_cert: Path
    node_cert: Path
    node_key: Path


def make_tls_files(folder: Path, days: int = 2) -> TlsFiles:
    """Write a new CA and a node certificate (SAN localhost, 127.0.0.1) signed by it."""
    server = make_server_tls(folder, days=days)
    # The keystore is the node's key, then its certificate, then the CA's.
    key, node_cert, _ca = (
        _BEGIN + block for block in server.keystore.read_bytes().split(_BEGIN)[1:]
    )
    files = TlsFiles(server.ca_cert, folder / "node.crt", folder / "node.key")
    files.node_cert.write_bytes(node_cert)
    files.node_key.write_bytes(key)
    return files
