"""What a local service is: fetched once, started detached, found again by pid file."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from finsentry.services import process
from finsentry.services.process import ServiceError, ServiceStatus
from finsentry.settings import Settings


@dataclass(frozen=True)
class Launch:
    command: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    user: str | None = None


class LocalService(ABC):
    name: str
    start_timeout: float

    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console(stderr=True)
        self.dir = settings.state_dir / self.name
        self.cache = settings.state_dir / "cache"
        self.pid_file = self.dir / f"{self.name}.pid"
        self.log_file = self.dir / f"{self.name}.log"

    @property
    @abstractmethod
    def version(self) -> str: ...

    @property
    @abstractmethod
    def url(self) -> str: ...

    @property
    @abstractmethod
    def marker(self) -> str:
        """A string in the service's command line that is unique to this state dir."""

    @abstractmethod
    def ports(self) -> dict[str, int]: ...

    @abstractmethod
    def fetch(self) -> None: ...

    @abstractmethod
    def prepare(self) -> Launch:
        """Write configuration and initialise storage; return how to start the process."""

    @abstractmethod
    def healthy(self) -> bool: ...

    def pid(self) -> int | None:
        return process.read_pid(self.pid_file, self.marker)

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(
            name=self.name,
            version=self.version,
            running=pid is not None,
            pid=pid,
            url=self.url,
            healthy=pid is not None and self.healthy(),
        )

    def up(self) -> None:
        """Start the service unless it is already running; return once it is healthy."""
        pid = self.pid()
        if pid is not None:
            if self.healthy():
                self.console.print(f"{self.name} {self.version} already running (pid {pid})")
                return
            self._wait(pid, "already starting")
            return
        process.ensure_ports_free(self.name, self.ports())
        self.fetch()
        self.dir.mkdir(parents=True, exist_ok=True)
        for attempt in (1, 2):
            launch = self.prepare()
            started = time.monotonic()
            pid = process.start_detached(
                launch.command,
                log_file=self.log_file,
                pid_file=self.pid_file,
                env=launch.env,
                cwd=launch.cwd,
                user=launch.user,
            )
            try:
                self._wait(pid, "starting", started)
                return
            except process.ServiceError:
                # A first start on a fresh machine can fail transiently: try once more.
                if attempt == 2 or self.pid() is not None:
                    raise
                self.console.print(f"{self.name} exited during start-up; starting it again")

    def _wait(self, pid: int, doing: str, started: float | None = None) -> None:
        started = started or time.monotonic()
        with self.console.status(f"{self.name} {self.version} {doing} (pid {pid}) …"):
            process.wait_until_healthy(
                self.name,
                self.healthy,
                lambda: process.process_alive(pid),
                timeout=self.start_timeout,
                log_file=self.log_file,
            )
        self.console.print(
            f"{self.name} {self.version} healthy at {self.url} (pid {pid}, "
            f"{time.monotonic() - started:.1f}s); log {self.log_file}"
        )

    def down(self) -> None:
        pid = self.pid()
        if pid is None:
            self.console.print(f"{self.name} is not running")
            self.pid_file.unlink(missing_ok=True)
            return
        with self.console.status(f"stopping {self.name} (pid {pid}) …"):
            process.stop_process_group(pid)
        if self.pid() is not None:
            raise ServiceError(f"{self.name} (pid {pid}) did not stop; see {self.log_file}")
        self.pid_file.unlink(missing_ok=True)
        self.console.print(f"{self.name} stopped")
