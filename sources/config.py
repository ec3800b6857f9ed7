"""The sources file: one entry per source, validated by pydantic.

```yaml
sources:
  - name: sec-8k                      # unique; becomes NewsItem.source
    kind: edgar                       # rss | atom | edgar | json
    url: https://www.sec.gov/cgi-bin/browse-edgar?action=getcurrent&type=8-K&output=atom
    interval: 300                     # seconds between polls (jittered)
    headers: {X-Api-Key: "${NEWS_KEY}"}   # ${NAME}: from FINSENTRY_SOURCE_SECRETS
    tickers: [AAPL]                   # default tickers of every item (extra.tickers)
```

A `json` source has a `fields` mapping of JMESPath expressions (`items`, `id`, `title`,
`text`, `url`, `published`, `tickers`, `author`): one mechanism for every news API, no
per-site code. `${NAME}` in a url or header value is replaced by the secret `NAME` of
`Settings.source_secrets`; resolved values are `SecretStr` and never logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import jmespath
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from finsentry.messages import Kind

SourceKind = Literal["rss", "atom", "edgar", "json"]
_SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


class SourcesFileError(ValueError):
    """The sources file cannot be used; the message names the bad entry and field."""


class JsonFields(BaseModel):
    """Where a JSON response keeps its items and each item's fields (JMESPath)."""

    model_config = ConfigDict(extra="forbid")

    items: str = Field("@", description="The list of items; `@` when the body is the list.")
    id: str | None = None
    title: str | None = "title"
    text: str | None = None
    url: str | None = "url"
    published: str | None = None
    tickers: str | None = None
    author: str | None = None

    @field_validator("*")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                jmespath.compile(value)
            except jmespath.exceptions.JMESPathError as exc:
                raise ValueError(f"not a JMESPath expression: {value!r} ({exc})") from exc
        return value

    @model_validator(mode="after")
    def _has_content(self) -> JsonFields:
        if self.title is None and self.text is None:
            raise ValueError("map at least one of `title` and `text`")
        return self


class SourceConfig(BaseModel):
    """One source to poll."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str
    kind: SourceKind
    url: str
    interval: float = Field(300.0, gt=0, le=86_400, description="Seconds between polls.")
    jitter: float = Field(0.1, ge=0, le=0.5, description="Fraction of the interval, +/-.")
    headers: dict[str, str] = Field(default_factory=dict)
    tickers: list[str] = Field(default_factory=list, description="Default tickers of its items.")
    item_kind: Kind = "news"
    lang: str | None = Field(None, max_length=16)
    fields: JsonFields | None = None
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("1-100 letters, digits or _.:- (it names the state file)")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("tickers")
    @classmethod
    def _tickers(cls, value: list[str]) -> list[str]:
        return [t.strip().upper().lstrip("$") for t in value if t.strip()]

    @model_validator(mode="after")
    def _fields_for_json(self) -> SourceConfig:
        if self.kind == "json" and self.fields is None:
            self.fields = JsonFields()
        if self.kind != "json" and self.fields is not None:
            raise ValueError("`fields` is for kind: json only")
        return self

    def secret_refs(self) -> set[str]:
        found = set(_SECRET_REF.findall(self.url))
        for value in self.headers.values():
            found.update(_SECRET_REF.findall(value))
        return found


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: Annotated[list[SourceConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> SourcesFile:
        seen: set[str] = set()
        for source in self.sources:
            if source.name in seen:
                raise ValueError(f"two sources are named {source.name!r}")
            seen.add(source.name)
        return self


class ResolvedSource(BaseModel):
    """A source with its secrets filled in: what the poller uses. Never logged whole."""

    config: SourceConfig
    url: SecretStr
    headers: dict[str, SecretStr]

    @property
    def name(self) -> str:
        return self.config.name


def _describe(exc: ValidationError, raw: object) -> str:
    entries = raw.get("sources") if isinstance(raw, dict) else None
    lines = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc) or "file"
        if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
            name = None
            if isinstance(entries, list) and loc[1] < len(entries):
                entry = entries[loc[1]]
                name = entry.get("name") if isinstance(entry, dict) else None
            rest = ".".join(str(p) for p in loc[2:] if not str(p).startswith("function-"))
            where = f"source #{loc[1] + 1}" + (f" ({name!r})" if name else "")
            where += f", field {rest!r}" if rest else ""
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def parse_sources(text: str, origin: str = "sources file") -> SourcesFile:
    """Validate a sources file's YAML text; `SourcesFileError` names each bad entry."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SourcesFileError(f"{origin}: not valid YAML: {exc}") from exc
    if isinstance(raw, list):
        raw = {"sources": raw}
    try:
        return SourcesFile.model_validate(raw)
    except ValidationError as exc:
        raise SourcesFileError(f"{origin}: {_describe(exc, raw)}") from exc


def load_sources(path: Path) -> SourcesFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourcesFileError(f"cannot read the sources file {path}: {exc}") from exc
    return parse_sources(text, origin=str(path))


def resolve(source: SourceConfig, secrets: Mapping[str, SecretStr]) -> ResolvedSource:
    """Fill `${NAME}` references from the secrets (names match case-insensitively)."""
    lowered = {k.lower(): v for k, v in secrets.items()}

    def fill(value: str) -> str:
        def one(match: re.Match[str]) -> str:
            secret = lowered.get(match.group(1).lower())
            if secret is None:
                raise SourcesFileError(
                    f"source {source.name!r}: ${{{match.group(1)}}} is not set; add it to "
                    f"FINSENTRY_SOURCE_SECRETS"
                )
            return secret.get_secret_value()

        return _SECRET_REF.sub(one, value)

    return ResolvedSource(
        config=source,
        url=SecretStr(fill(source.url)),
        headers={k: SecretStr(fill(v)) for k, v in source.headers.items()},
    )
