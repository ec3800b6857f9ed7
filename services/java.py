"""Find a JDK of at least a given major version."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from finsentry.services.process import ServiceError

JVM_ROOT = Path("/usr/lib/jvm")


def parse_major(version_text: str) -> int | None:
    """Major version from a `release` file's JAVA_VERSION or `java -version` output
    ("1.8.0_392" -> 8, "17.0.15" -> 17, "25" -> 25)."""
    match = re.search(r'version "?(\d+)(?:\.(\d+))?', version_text) or re.search(
        r'JAVA_VERSION="(\d+)(?:\.(\d+))?', version_text
    )
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def java_major(java: Path) -> int | None:
    release = java.parent.parent / "release"
    if release.is_file():
        major = parse_major(release.read_text(errors="replace"))
        if major is not None:
            return major
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return parse_major(done.stderr + done.stdout)


def find_java_home(minimum: int, configured: Path | None, setting: str) -> Path:
    """The JDK home to use: `configured` (checked), else `java` on PATH, else the newest JDK
    under /usr/lib/jvm, whichever first has major version >= `minimum`."""
    if configured is not None:
        java = configured / "bin" / "java"
        major = java_major(java) if java.exists() else None
        if major is None:
            raise ServiceError(f"{setting}={configured}: no usable {java}")
        if major < minimum:
            raise ServiceError(f"{setting}={configured} is Java {major}; Java {minimum}+ needed")
        return configured
    on_path = shutil.which("java")
    if on_path:
        home = Path(on_path).resolve().parent.parent
        major = java_major(home / "bin" / "java")
        if major is not None and major >= minimum:
            return home
    found: list[tuple[int, Path]] = []
    if JVM_ROOT.is_dir():
        for home in sorted(JVM_ROOT.iterdir()):
            java = home / "bin" / "java"
            major = java_major(java) if java.exists() else None
            if major is not None and major >= minimum:
                found.append((major, home))
    if not found:
        raise ServiceError(
            f"no Java {minimum}+ found (looked at `java` on PATH and {JVM_ROOT}); install a "
            f"JDK {minimum}+ or set {setting} to one"
        )
    return max(found)[1]
