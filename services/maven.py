"""Fetch the services' artifacts from Maven Central with Maven, once, into the cache."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from rich.console import Console

from finsentry.services.process import ServiceError

COMPLETE = ".complete"


def run_maven(args: Sequence[str], coordinates: str, console: Console, cwd: Path) -> None:
    """Run `mvn -B <args>`, showing each download on a status line; on failure raise with
    Maven's error lines and the coordinates that were being fetched."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(f"Maven (`mvn`) is not on PATH; it is needed to fetch {coordinates}")
    command = [mvn, "-B", *args]
    output: list[str] = []
    with (
        console.status(f"fetching {coordinates} with Maven") as status,
        subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            output.append(line)
            if "Downloaded from" in line or "Downloading from" in line:
                status.update(f"fetching {coordinates}: {line.split(': ', 1)[-1][:120]}")
        code = proc.wait()
    if code != 0:
        errors = [line for line in output if "[ERROR]" in line] or output[-20:]
        raise ServiceError(
            f"Maven failed (exit {code}) fetching {coordinates}:\n  {' '.join(command)}\n"
            + "\n".join(errors)
        )


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fetch_kafka(cache: Path, version: str, console: Console) -> Path:
    """The directory of Kafka's jars (`<cache>/kafka-<version>/libs`), fetched if missing."""
    home = cache / f"kafka-{version}"
    libs = home / "libs"
    if (home / COMPLETE).exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    if libs.exists():
        shutil.rmtree(libs)
    pom = home / "pom.xml"
    pom.write_bytes(resources.files("finsentry.services").joinpath("kafka-pom.xml").read_bytes())
    coordinates = f"org.apache.kafka:kafka_2.13:{version}"
    started = time.monotonic()
    run_maven(
        [
            "-f",
            str(pom),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        coordinates,
        console,
        cwd=home,
    )
    if not any(libs.glob(f"kafka_2.13-{version}.jar")):
        raise ServiceError(f"Maven did not produce kafka_2.13-{version}.jar in {libs}")
    (home / COMPLETE).write_text("")
    console.print(
        f"fetched {coordinates} ({_dir_size(libs) / 1e6:.0f} MB, "
        f"{time.monotonic() - started:.0f}s) into {libs}"
    )
    return libs


def fetch_elasticsearch(cache: Path, version: str, console: Console) -> Path:
    """The unpacked Elasticsearch home (`<cache>/elasticsearch-<version>`), fetched if missing."""
    home = cache / f"elasticsearch-{version}"
    if (home / COMPLETE).exists():
        return home
    cache.mkdir(parents=True, exist_ok=True)
    coordinates = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
    download = cache / "downloads"
    archive = download / f"elasticsearch-{version}.zip"
    started = time.monotonic()
    if not archive.exists():
        run_maven(
            [
                "dependency:copy",
                f"-Dartifact={coordinates}",
                f"-DoutputDirectory={download}",
            ],
            coordinates,
            console,
            cwd=cache,
        )
    if not archive.exists():
        raise ServiceError(f"Maven did not produce {archive}")
    unpack = cache / f".unpack-elasticsearch-{version}"
    if unpack.exists():
        shutil.rmtree(unpack)
    with console.status(f"unpacking {archive.name}"):
        extract_zip(archive, unpack)
    inner = unpack / f"elasticsearch-{version}"
    if not (inner / "bin" / "elasticsearch").exists():
        raise ServiceError(f"{archive} has no elasticsearch-{version}/bin/elasticsearch")
    if home.exists():
        shutil.rmtree(home)
    inner.rename(home)
    shutil.rmtree(unpack)
    archive.unlink()
    with contextlib.suppress(OSError):
        download.rmdir()
    (home / COMPLETE).write_text("")
    console.print(
        f"fetched {coordinates} ({_dir_size(home) / 1e6:.0f} MB unpacked, "
        f"{time.monotonic() - started:.0f}s) into {home}"
    )
    return home


def extract_zip(archive: Path, target: Path) -> None:
    """Unzip keeping the Unix permission bits (zipfile alone drops the executable bit)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, target))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                path.chmod(mode)
