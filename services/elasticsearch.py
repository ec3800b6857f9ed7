"""A single-node Elasticsearch from Elastic's integ-test-zip distribution (core features)."""

from __future__ import annotations

import os
import pwd
import shutil
import ssl
import subprocess
from pathlib import Path

from finsentry.services import process
from finsentry.services.base import Launch, LocalService
from finsentry.services.java import find_java_home
from finsentry.services.maven import fetch_elasticsearch
from finsentry.services.process import ServiceError
from finsentry.settings import Settings

CLUSTER_NAME = "finsentry-local"


def elasticsearch_yml(settings: Settings, data: Path, logs: Path) -> str:
    """The node's elasticsearch.yml. JSON scalars are valid YAML, so values are quoted safely."""
    values: dict[str, object] = {
        "cluster.name": CLUSTER_NAME,
        "node.name": f"{CLUSTER_NAME}-1",
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": settings.elasticsearch_port,
        "transport.port": transport_port(settings),
        "path.data": str(data),
        "path.logs": str(logs),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.auto_create_index": True,
        "xpack.security.enabled": settings.elasticsearch_security,
    }
    if settings.elasticsearch_security:
        # Plain HTTP on loopback; TLS is for the production cluster.
        values["xpack.security.http.ssl.enabled"] = False
        values["xpack.security.transport.ssl.enabled"] = False
    lines = ["# Written by `finsentry services up`; edits are overwritten."]
    for key, value in values.items():
        rendered = str(value).lower() if isinstance(value, bool) else value
        lines.append(f'{key}: "{rendered}"' if isinstance(value, str) else f"{key}: {rendered}")
    return "\n".join(lines) + "\n"


def transport_port(settings: Settings) -> int:
    return settings.elasticsearch_port + 100


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The OS account Elasticsearch runs as (it refuses to run as root); created if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise ServiceError(f"cannot create the system user {name!r}: `useradd` not found")
    done = subprocess.run(
        [
            useradd,
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 9):  # 9: the user exists (created concurrently)
        raise ServiceError(f"useradd {name} failed: {done.stderr.strip()}")
    return pwd.getpwnam(name)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for path in root.rglob("*"):
        os.chown(path, uid, gid, follow_symlinks=False)


class LocalElasticsearch(LocalService):
    name = "elasticsearch"
    start_timeout = 240.0

    @property
    def version(self) -> str:
        return self.settings.elasticsearch_version

    @property
    def url(self) -> str:
        return f"http://localhost:{self.settings.elasticsearch_port}"

    @property
    def home(self) -> Path:
        return self.cache / f"elasticsearch-{self.version}"

    @property
    def config_dir(self) -> Path:
        return self.dir / "config"

    @property
    def marker(self) -> str:
        # The launcher's command line has no paths, but it runs in its (per state dir) home.
        return str(self.home)

    def ports(self) -> dict[str, int]:
        return {
            "Elasticsearch HTTP": self.settings.elasticsearch_port,
            "Elasticsearch transport": transport_port(self.settings),
        }

    def fetch(self) -> None:
        fetch_elasticsearch(self.cache, self.version, self.console)

    def _user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        return ensure_system_user(self.settings.elasticsearch_user)

    def _env(self, java_home: Path) -> dict[str, str]:
        heap = self.settings.elasticsearch_heap
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ES_", "JAVA_"))}
        env.update(
            ES_JAVA_HOME=str(java_home),
            ES_PATH_CONF=str(self.config_dir),
            ES_JAVA_OPTS=f"-Xms{heap} -Xmx{heap}",
            HOME=str(self.dir),
        )
        return env

    def prepare(self) -> Launch:
        java_home = find_java_home(21, self.settings.es_java_home, "FINSENTRY_ES_JAVA_HOME")
        data, logs = self.dir / "data", self.dir / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        self._copy_distribution_config()
        (self.config_dir / "elasticsearch.yml").write_text(
            elasticsearch_yml(self.settings, data, logs)
        )
        account = self._user()
        if account is not None:
            chown_tree(self.dir, account.pw_uid, account.pw_gid)
        env = self._env(java_home)
        if self.settings.elasticsearch_security:
            self._set_bootstrap_password(env, account)
        return Launch(
            command=[str(self.home / "bin" / "elasticsearch")],
            env=env,
            cwd=logs,
            user=account.pw_name if account else None,
        )

    def _copy_distribution_config(self) -> None:
        """The distribution's config files, copied once per version (the keystore and the
        generated elasticsearch.yml are kept across upgrades)."""
        stamp = self.config_dir / ".finsentry-version"
        if stamp.exists() and stamp.read_text().strip() == self.version:
            return
        shutil.copytree(
            self.home / "config",
            self.config_dir,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("elasticsearch.keystore"),
        )
        stamp.write_text(self.version + "\n")

    def _set_bootstrap_password(
        self, env: dict[str, str], account: pwd.struct_passwd | None
    ) -> None:
        """Store the `elastic` user's bootstrap password (FINSENTRY_ES_PASSWORD) in the
        node's keystore; it takes effect until the password is changed through the API."""
        password = self.settings.es_password
        if password is None:
            raise ServiceError(
                "FINSENTRY_ELASTICSEARCH_SECURITY is on: set FINSENTRY_ES_PASSWORD (the "
                "bootstrap password of the `elastic` user)"
            )
        tool = str(self.home / "bin" / "elasticsearch-keystore")
        ids = {"user": account.pw_uid, "group": account.pw_gid} if account else {}
        keystore = self.config_dir / "elasticsearch.keystore"
        steps: list[tuple[list[str], str | None]] = []
        if not keystore.exists():
            steps.append(([tool, "create"], None))
        steps.append(
            ([tool, "add", "--stdin", "--force", "bootstrap.password"], password.get_secret_value())
        )
        for command, stdin in steps:
            done = subprocess.run(
                command, input=stdin, env=env, capture_output=True, text=True, check=False, **ids
            )
            if done.returncode != 0:
                raise ServiceError(
                    f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}".strip()
                )

    def auth(self) -> tuple[str, str] | None:
        if not self.settings.elasticsearch_security or self.settings.es_password is None:
            return None
        return ("elastic", self.settings.es_password.get_secret_value())

    def http_verify(self) -> ssl.SSLContext | bool:
        """How the health check verifies the node's HTTPS certificate (plain HTTP here)."""
        return True

    def healthy(self) -> bool:
        if not process.port_open(self.settings.elasticsearch_port):
            return False
        import httpx

        try:
            response = httpx.get(
                f"{self.url}/_cluster/health",
                params={"wait_for_status": "yellow", "timeout": "2s"},
                auth=self.auth(),
                verify=self.http_verify(),
                timeout=10.0,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json().get("status") in (
            "green",
            "yellow",
        )
