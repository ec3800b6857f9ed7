"""Private Kafka and Elasticsearch for fault and security tests.

The same classes as `finsentry services` (services/kafka.py, services/elasticsearch.py), on
free ports and with a state dir of their own, so a test may stop, restart or secure them
without touching the shared localhost:9092 / localhost:9200 that other tests are using.
The downloads are shared: `LocalService.cache` is `state_dir / "cache"` and Settings has no
option for it, so the private state dir gets a symlink to the shared cache (nothing is
fetched again).
"""

from __future__ import annotations

import random
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from finsentry.services import process
from finsentry.services.base import Launch, LocalService
from finsentry.services.elasticsearch import LocalElasticsearch, chown_tree
from finsentry.services.kafka import LocalKafka
from finsentry.services.process import ServiceError
from finsentry.settings import Settings
from tests.support.tls import TlsFiles


def free_port(offsets: tuple[int, ...] = (0,)) -> int:
    """A port p such that p + each offset is free (Elasticsearch's transport is http + 100)."""
    for _ in range(200):
        port = random.randint(20_000, 40_000)
        if not any(process.port_open(port + o) for o in offsets):
            return port
    raise RuntimeError("no free port found")


def private_state_dir(base: Settings, prefix: str) -> Path:
    """A new state dir that the Elasticsearch OS user can traverse, with the shared cache."""
    folder = Path(tempfile.mkdtemp(prefix=f"finsentry-{prefix}-"))
    folder.chmod(0o755)
    (folder / "cache").symlink_to(base.state_dir.resolve() / "cache", target_is_directory=True)
    return folder


def kafka_settings(base: Settings, state_dir: Path) -> Settings:
    port = free_port((0, 1))
    return base.model_copy(
        update={
            "state_dir": state_dir,
            "kafka_port": port,
            "kafka_controller_port": port + 1,
            "kafka_bootstrap": f"localhost:{port}",
            "manage_services": False,
        }
    )


def elasticsearch_settings(base: Settings, state_dir: Path, **overrides: object) -> Settings:
    port = free_port((0, 100))
    return base.model_copy(
        update={
            "state_dir": state_dir,
            "elasticsearch_port": port,
            "elasticsearch_heap": "512m",
            "es_url": f"http://localhost:{port}",
            "manage_services": False,
            **overrides,
        }
    )


class TlsElasticsearch(LocalElasticsearch):
    """The local node with HTTPS (`xpack.security.http.ssl.*`) on top of x-pack security.

    services/elasticsearch.py keeps HTTP plain on loopback; this adds, for tests only, what
    a production cluster has: the node certificate and key in its config dir, and clients
    that verify it against the CA."""

    def __init__(
        self,
        settings: Settings,
        tls: TlsFiles,
        console: Console | None = None,
        *,
        roles_yml: str = "",
        users: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(settings, console)
        self.tls = tls
        self.roles_yml = roles_yml
        self.users = users or {}  # name -> (password, comma-separated roles): file realm

    @property
    def url(self) -> str:
        return f"https://localhost:{self.settings.elasticsearch_port}"

    def prepare(self) -> Launch:
        launch = super().prepare()
        certs = self.config_dir / "certs"
        certs.mkdir(exist_ok=True)
        for source in (self.tls.ca_cert, self.tls.node_cert, self.tls.node_key):
            shutil.copy(source, certs / source.name)
        yml = self.config_dir / "elasticsearch.yml"
        text = yml.read_text().replace(
            "xpack.security.http.ssl.enabled: false", "xpack.security.http.ssl.enabled: true"
        )
        text += (
            f'xpack.security.http.ssl.certificate: "certs/{self.tls.node_cert.name}"\n'
            f'xpack.security.http.ssl.key: "certs/{self.tls.node_key.name}"\n'
            f'xpack.security.http.ssl.certificate_authorities: ["certs/{self.tls.ca_cert.name}"]\n'
        )
        yml.write_text(text)
        (self.config_dir / "roles.yml").write_text(self.roles_yml)
        self._add_file_users(launch)
        account = self._user()
        if account is not None:
            chown_tree(self.config_dir, account.pw_uid, account.pw_gid)
        return launch

    def _add_file_users(self, launch: Launch) -> None:
        """File-realm users (the integ-test zip cannot keep native users or API keys: its
        security index needs the analysis-common module, which that distribution lacks)."""
        existing = (self.config_dir / "users").read_text() if self.users else ""
        tool = str(self.home / "bin" / "elasticsearch-users")
        for name, (password, roles) in self.users.items():
            if f"{name}:" in existing:
                continue
            done = subprocess.run(
                [tool, "useradd", name, "-p", password, "-r", roles],
                env=dict(launch.env),
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise ServiceError(f"elasticsearch-users useradd {name} failed: {done.stderr}")

    def http_verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.tls.ca_cert))


@contextmanager
def running(service: LocalService) -> Iterator[LocalService]:
    """Start `service`; stop it and delete its state dir afterwards, whatever happened."""
    try:
        service.up()
        yield service
    finally:
        try:
            service.down()
        finally:
            shutil.rmtree(service.settings.state_dir, ignore_errors=True)


def private_kafka(base: Settings) -> LocalKafka:
    return LocalKafka(kafka_settings(base, private_state_dir(base, "kafka")))


def private_elasticsearch(base: Settings, **overrides: object) -> LocalElasticsearch:
    return LocalElasticsearch(
        elasticsearch_settings(base, private_state_dir(base, "es"), **overrides)
    )


def private_tls_elasticsearch(
    base: Settings,
    tls: TlsFiles,
    password: str,
    *,
    roles_yml: str = "",
    users: dict[str, tuple[str, str]] | None = None,
) -> TlsElasticsearch:
    """A secured node (user `elastic`, bootstrap `password`; file-realm `users` with
    `roles_yml`) serving HTTPS with `tls`."""
    settings = elasticsearch_settings(
        base,
        private_state_dir(base, "es-tls"),
        elasticsearch_security=True,
        es_password=SecretStr(password),
        es_username="elastic",
        es_ca_certs=tls.ca_cert,
    )
    service = TlsElasticsearch(settings, tls, roles_yml=roles_yml, users=users)
    settings = settings.model_copy(update={"es_url": service.url})
    service.settings = settings
    return service
