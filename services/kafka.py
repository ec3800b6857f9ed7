"""A single-node KRaft Kafka broker (combined broker + controller) run from Maven jars."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from finsentry.services import process
from finsentry.services.base import Launch, LocalService
from finsentry.services.java import find_java_home
from finsentry.services.maven import fetch_kafka
from finsentry.services.process import ServiceError
from finsentry.settings import Settings

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


def server_properties(settings: Settings, log_dirs: Path) -> str:
    """The broker's server.properties: one node that is both broker and controller."""
    port, cport = settings.kafka_port, settings.kafka_controller_port
    values = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://localhost:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
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
    return "".join(f"{key}={value}\n" for key, value in values.items())


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

    def _tool(self, java: str, *args: str) -> str:
        command = [java, "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(
                f"kafka storage tool failed: {' '.join(command)}\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def prepare(self) -> Launch:
        java = self._java()
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(server_properties(self.settings, data))
        log4j = self.dir / "log4j.properties"
        log4j.write_text(LOG4J_PROPERTIES)
        if not (data / "meta.properties").exists():
            cluster_id = self._tool(java, "random-uuid").strip().splitlines()[-1]
            (self.dir / "cluster-id").write_text(cluster_id + "\n")
            self._tool(java, "format", "-t", cluster_id, "-c", str(self.config_file))
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
