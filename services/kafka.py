"""A single-node KRaft Kafka broker (combined broker + controller) run from Maven jars.

PLAINTEXT by default. With `FINSENTRY_KAFKA_SECURITY_PROTOCOL=SASL_SSL` (and
`FINSENTRY_KAFKA_SASL_MECHANISM=SCRAM-SHA-512`, `_USERNAME`, `_PASSWORD`) the client listener
is SASL_SSL with SCRAM-SHA-512: a CA and broker certificate are made at start (services/tls.py),
the SCRAM credentials of the client user and of the broker's own user are written into the
metadata when the storage is formatted (`kafka-storage format --add-scram`), and the clients
trust the CA at `finsentry.settings.local_kafka_ca_file`. The controller listener stays
PLAINTEXT on 127.0.0.1 (KRaft controllers cannot use SCRAM); nothing else listens.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from finsentry.services import process
from finsentry.services.base import Launch, LocalService
from finsentry.services.java import find_java_home
from finsentry.services.kafka_login import KafkaLoginError, verify_kafka_login
from finsentry.services.maven import fetch_kafka
from finsentry.services.process import ServiceError
from finsentry.services.tls import (
    ServerTls,
    make_server_tls,
    needs_new_certificate,
    server_tls_files,
    write_private,
)
from finsentry.settings import Settings, local_kafka_ca_file

SCRAM = "SCRAM-SHA-512"
BROKER_USER = "finsentry-broker"
PROTOCOLS = ("PLAINTEXT", "SASL_SSL")
_USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SCRAM_ITERATIONS = 100_000


@dataclass(frozen=True)
class SaslConfig:
    """What a SASL_SSL broker needs: its TLS files and its own SCRAM user's password."""

    tls: ServerTls
    broker_password: str


LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


def local_protocol(settings: Settings) -> str:
    """The local broker's client protocol (from the clients' setting), checked for what
    the local broker can serve; a ServiceError says what to set otherwise."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise ServiceError(
            f"the local Kafka serves PLAINTEXT or SASL_SSL (SCRAM-SHA-512), not {protocol}; "
            "set FINSENTRY_KAFKA_SECURITY_PROTOCOL, or FINSENTRY_MANAGE_SERVICES=false for "
            "an external broker"
        )
    if protocol == "SASL_SSL":
        mechanism = (settings.kafka_sasl_mechanism or "").upper()
        if mechanism != SCRAM:
            raise ServiceError(
                f"the local SASL_SSL Kafka uses {SCRAM}: set FINSENTRY_KAFKA_SASL_MECHANISM="
                f"{SCRAM} (it is {mechanism or 'unset'})"
            )
        if not _USERNAME.fullmatch(settings.kafka_sasl_username or ""):
            raise ServiceError(
                "the local SASL_SSL Kafka needs FINSENTRY_KAFKA_SASL_USERNAME "
                "(letters, digits, '.', '_', '-')"
            )
        password = settings.kafka_sasl_password
        if password is None or not password.get_secret_value():
            raise ServiceError("the local SASL_SSL Kafka needs FINSENTRY_KAFKA_SASL_PASSWORD")
        if any(c in password.get_secret_value() for c in '"\\\n'):
            raise ServiceError(
                "FINSENTRY_KAFKA_SASL_PASSWORD must not contain a double quote, a backslash "
                "or a newline (Kafka's SCRAM and JAAS syntax)"
            )
    return protocol


def server_properties(settings: Settings, log_dirs: Path, sasl: SaslConfig | None = None) -> str:
    """The broker's server.properties: one node that is both broker and controller; with
    `sasl`, the client listener is SASL_SSL (SCRAM-SHA-512), as docker-compose.sasl.yml."""
    port, cport = settings.kafka_port, settings.kafka_controller_port
    protocol = "SASL_SSL" if sasl else "PLAINTEXT"
    values = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "listeners": f"{protocol}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"{protocol}://localhost:{port}",
        "listener.security.protocol.map": f"{protocol}:{protocol},CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": protocol,
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.voters": f"1@127.0.0.1:{cport}",
        "log.dirs": str(log_dirs),
        "num.partitions": str(settings.topic_partitions),
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
    }
    if sasl is not None:
        values |= sasl_properties(sasl, listener=protocol)
    return "".join(f"{key}={value}\n" for key, value in values.items())


def sasl_properties(sasl: SaslConfig, listener: str) -> dict[str, str]:
    """SCRAM-SHA-512 over TLS on `listener` (the broker's own connections included)."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{BROKER_USER}" password="{sasl.broker_password}";'
    )
    return {
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        f"listener.name.{listener.lower()}.{SCRAM.lower()}.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(sasl.tls.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(sasl.tls.ca_cert),
        "ssl.client.auth": "none",
        "ssl.endpoint.identification.algorithm": "https",
    }


def scram_fingerprint(username: str, password: str, salt: bytes) -> str:
    """A salted, slow hash of the client credentials the storage was formatted with."""
    digest = hashlib.pbkdf2_hmac(
        "sha512", f"{username}\0{password}".encode(), salt, _SCRAM_ITERATIONS
    )
    return f"{salt.hex()}:{digest.hex()}"


def same_credentials(fingerprint: str, username: str, password: str) -> bool:
    salt, _, _ = fingerprint.strip().partition(":")
    expected = scram_fingerprint(username, password, bytes.fromhex(salt))
    return hmac.compare_digest(expected, fingerprint.strip())


class LocalKafka(LocalService):
    name = "kafka"
    start_timeout = 120.0

    @property
    def version(self) -> str:
        return self.settings.kafka_version

    @property
    def url(self) -> str:
        return f"localhost:{self.settings.kafka_port}"

    @property
    def config_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def marker(self) -> str:
        return str(self.config_file)

    @property
    def libs(self) -> Path:
        return self.cache / f"kafka-{self.version}" / "libs"

    def ports(self) -> dict[str, int]:
        return {
            "Kafka listener": self.settings.kafka_port,
            "Kafka controller": self.settings.kafka_controller_port,
        }

    def fetch(self) -> None:
        fetch_kafka(self.cache, self.version, self.console)

    def _java(self) -> str:
        home = find_java_home(17, self.settings.java_home, "FINSENTRY_JAVA_HOME")
        return str(home / "bin" / "java")

    @property
    def protocol(self) -> str:
        return local_protocol(self.settings)

    @property
    def tls_dir(self) -> Path:
        return local_kafka_ca_file(self.settings.state_dir).parent

    @property
    def sasl_dir(self) -> Path:
        return self.dir / "sasl"

    def _tool(self, java: str, *args: str, hide: tuple[str, ...] = ()) -> str:
        command = [java, "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            message = f"kafka storage tool failed: {' '.join(command)}\n{done.stdout}{done.stderr}"
            for secret in hide:
                message = message.replace(secret, "**********")
            raise ServiceError(message)
        return done.stdout

    def running_protocol(self) -> str | None:
        """The client protocol of the broker this state dir last configured."""
        if not self.config_file.is_file():
            return None
        for line in self.config_file.read_text().splitlines():
            if line.startswith("advertised.listeners="):
                return line.split("=", 1)[1].split(":", 1)[0]
        return None

    def up(self) -> None:
        """As LocalService.up; a broker already running with another protocol is an error
        (it would never pass the health check), not a wait."""
        wanted = self.protocol
        running = self.running_protocol()
        if self.pid() is not None and running is not None and running != wanted:
            raise ServiceError(
                f"the local Kafka runs with {running}, but {wanted} is configured: "
                "`finsentry services down --only kafka` first, then `up` again"
            )
        super().up()
        if wanted == "SASL_SSL":
            try:  # a broker already running may know other credentials
                verify_kafka_login(self.settings)
            except KafkaLoginError as exc:
                raise ServiceError(f"the local SASL_SSL Kafka is up, but: {exc}") from None
            self.console.print(
                f"kafka: SASL_SSL ({SCRAM}) for user {self.settings.kafka_sasl_username!r}; "
                f"clients trust {server_tls_files(self.tls_dir).ca_cert}"
            )

    def _sasl_config(self) -> SaslConfig:
        """TLS files (new when missing or expiring) and the broker user's password."""
        tls = server_tls_files(self.tls_dir)
        if needs_new_certificate(tls):
            make_server_tls(tls.ca_cert.parent)
        self.sasl_dir.mkdir(mode=0o700, exist_ok=True)
        password_file = self.sasl_dir / "broker.password"
        if not password_file.is_file():
            write_private(password_file, secrets.token_urlsafe(32).encode())
        return SaslConfig(tls=tls, broker_password=password_file.read_text().strip())

    def _format(self, java: str, data: Path, sasl: SaslConfig | None) -> None:
        """Format the storage once; a SASL one with the broker's and the client's SCRAM
        credentials (and a fingerprint of the client's, to notice a changed password)."""
        fingerprint_file = self.sasl_dir / "client.fingerprint"
        username = self.settings.kafka_sasl_username or ""
        password = self.settings.kafka_sasl_password
        secret = password.get_secret_value() if password else ""
        if (data / "meta.properties").exists():
            known = fingerprint_file.read_text() if fingerprint_file.is_file() else ""
            if sasl is not None and not (known and same_credentials(known, username, secret)):
                raise ServiceError(
                    f"the local SASL_SSL Kafka's storage ({data}) was formatted for other "
                    "credentials than FINSENTRY_KAFKA_SASL_USERNAME/PASSWORD; set those back, "
                    f"or stop Kafka and delete {data} to start empty with the new ones"
                )
            return
        cluster_id = self._tool(java, "random-uuid").strip().splitlines()[-1]
        (self.dir / "cluster-id").write_text(cluster_id + "\n")
        args = ["format", "-t", cluster_id, "-c", str(self.config_file)]
        hidden: tuple[str, ...] = ()
        if sasl is not None:
            for user, pw in ((BROKER_USER, sasl.broker_password), (username, secret)):
                args += ["--add-scram", f'{SCRAM}=[name={user},password="{pw}"]']
            hidden = (sasl.broker_password, secret)
            write_private(
                fingerprint_file, scram_fingerprint(username, secret, os.urandom(16)).encode()
            )
        self._tool(java, *args, hide=hidden)

    def prepare(self) -> Launch:
        java = self._java()
        sasl = self._sasl_config() if self.protocol == "SASL_SSL" else None
        # One storage a protocol: SCRAM credentials live in the metadata log from format on.
        data = self.dir / ("data-sasl-ssl" if sasl else "data")
        data.mkdir(parents=True, exist_ok=True)
        self.config_file.unlink(missing_ok=True)
        write_private(self.config_file, server_properties(self.settings, data, sasl).encode())
        log4j = self.dir / "log4j.properties"
        log4j.write_text(LOG4J_PROPERTIES)
        self._format(java, data, sasl)
        command = [
            java,
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            f"{self.libs}/*",
            "kafka.Kafka",
            str(self.config_file),
        ]
        return Launch(command=command, env=dict(os.environ), cwd=self.dir)

    def healthy(self) -> bool:
        if not process.port_open(self.settings.kafka_port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=f"127.0.0.1:{self.settings.kafka_port}",
                client_id="finsentry-health",
                request_timeout_ms=5000,
                bootstrap_timeout_ms=5000,
                **self._admin_options(),
            )
        except (KafkaError, OSError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def _admin_options(self) -> dict[str, object]:
        """The health check connects as the broker's own SCRAM user on a SASL_SSL broker."""
        if self.running_protocol() != "SASL_SSL":
            return {}
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": SCRAM,
            "sasl_plain_username": BROKER_USER,
            "sasl_plain_password": (self.sasl_dir / "broker.password").read_text().strip(),
            "ssl_cafile": str(server_tls_files(self.tls_dir).ca_cert),
        }
