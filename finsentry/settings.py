"""The one settings object. Every value comes from a `FINSENTRY_*` environment variable
(or an optional `.env` file) and the object is passed to whatever needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Versions of the local real services; docker-compose.yml pins the same ones.
KAFKA_VERSION = "3.9.1"
ELASTICSEARCH_VERSION = "9.5.4"

_REPO_ROOT = Path(__file__).resolve().parent.parent
# Vendored into the repository (data/README.md): a fresh clone is self-contained.
_DEFAULT_DATA_DIR = _REPO_ROOT / "data"


def local_kafka_ca_file(state_dir: Path) -> Path:
    """The CA certificate `finsentry services up` makes for a SASL_SSL local broker."""
    return state_dir / "kafka" / "tls" / "ca.crt"


def default_company_files(data_dir: Path) -> list[Path]:
    companies = data_dir / "companies"
    names = ("sp500_constituents.csv", "nasdaq-listed.csv", "nyse-listed.csv", "aliases.csv")
    return [companies / n for n in names if (companies / n).exists()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FINSENTRY_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    # --- local services (used when `manage_services` is true) -------------------------
    manage_services: bool = Field(
        True, description="Start the local Kafka and Elasticsearch unless others are configured."
    )
    state_dir: Path = Field(_REPO_ROOT / ".finsentry", description="Downloads, data and logs.")
    kafka_version: str = KAFKA_VERSION
    elasticsearch_version: str = ELASTICSEARCH_VERSION
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    elasticsearch_port: int = 9200
    elasticsearch_heap: str = "1g"
    elasticsearch_user: str = Field("finsentry-es", description="OS user that runs the local node.")
    elasticsearch_security: bool = Field(
        False, description="Local node with x-pack security; `elastic`'s password: es_password."
    )
    java_home: Path | None = Field(None, description="JDK for Kafka (Java 17+).")
    es_java_home: Path | None = Field(None, description="JDK for Elasticsearch 9 (Java 21+).")

    # --- Kafka --------------------------------------------------------------------
    kafka_bootstrap: str = "localhost:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA for SSL/SASL_SSL; unset with local services: the local broker's."
    )
    kafka_session_timeout: float = Field(
        60.0,
        ge=6.0,
        description="Seconds before a silent worker's partitions go to the others in its group.",
    )
    topic_raw: str = "finsentry.raw"
    topic_scored: str = "finsentry.scored"
    topic_dead_letters: str = "finsentry.dead-letters"
    topic_alerts: str = "finsentry.alerts"
    topic_partitions: int = 4
    app_id: str = "finsentry"

    # --- stream processing ------------------------------------------------------------
    max_batch: int = Field(64, ge=1, le=4096, description="Most items scored in one batch.")
    max_wait: float = Field(
        0.5, gt=0, le=60, description="Most seconds a batch waits to fill (the wait adapts)."
    )
    min_wait: float = Field(
        0.02, ge=0, le=60, description="Least seconds a batch waits to fill, under light load."
    )
    overlap_writes: bool = Field(
        True,
        description="Score the next batch while the last one is written (streams/pipeline.py); "
        "false: score, write and acknowledge one batch at a time.",
    )
    model_batch: int = Field(
        0, ge=0, le=4096, description="Texts per forward pass; 0 = by device (CPU 16, CUDA 128)."
    )
    max_text_chars: int = Field(20_000, ge=1, description="Longer texts are dead-lettered.")
    bulk_max_retries: int = Field(8, ge=0)
    metrics_port: int = Field(
        9101, ge=0, le=65535, description="The worker's Prometheus endpoint; 0 turns it off."
    )
    bulk_initial_backoff: float = Field(0.5, gt=0)
    bulk_max_backoff: float = Field(30.0, gt=0)

    # --- Elasticsearch ----------------------------------------------------------------
    es_url: str = "http://localhost:9200"
    es_username: str | None = None
    es_password: SecretStr | None = None
    es_api_key: SecretStr | None = None
    es_ca_certs: Path | None = None
    es_request_timeout: float = Field(30.0, gt=0, description="Seconds per ES request.")
    es_retry_on_timeout: bool = True
    es_max_retries: int = Field(3, ge=0)
    items_index: str = "finsentry-items"
    items_refresh_interval: str | None = Field(
        "100ms",
        pattern=r"^(-1|\d+(ms|s|m))$",
        description="How often new items become searchable (the items index's "
        "`refresh_interval`): part of the produce-to-searchable latency, chosen by "
        "measurement (BENCHMARKS.md, 'Speed at full quality'); None leaves the index alone.",
    )
    company_verdicts_index: str = Field(
        "finsentry-company-verdicts",
        description="One document per company of a scored item, with its own verdict "
        "(flat, for Grafana's per-ticker panels and rules).",
    )
    alerts_index: str = "finsentry-alerts"

    # --- models -----------------------------------------------------------------------
    models_dir: Path = Field(_REPO_ROOT / "artifacts" / "models")
    model_path: Path | None = Field(None, description="Serve this artifact instead of the newest.")
    device: str = Field("auto", description="auto | cpu | cuda")
    onnx_spinning: bool = Field(
        False,
        description="ONNX Runtime's threads spin-wait between runs (its own default): ~8 % "
        "more items/s end to end for the 6-layer model on a machine the worker has to itself, "
        "none for the 3-layer student, and CPU taken from whatever shares the cores "
        "(Elasticsearch, Kafka, other workers; BENCHMARKS.md, 'Where the cores go').",
    )
    data_dir: Path = Field(_DEFAULT_DATA_DIR, description="Labelled training data.")
    company_files: list[Path] = Field(default_factory=list, validate_default=True)
    # model lifecycle (models/registry.py, training/defaults.py, index/rescore.py)
    model_poll_interval: float = Field(
        2.0, gt=0, description="Seconds between a worker's checks for a newly promoted model."
    )
    bootstrap_max_samples: int | None = Field(
        None, ge=10, description="Cap per task for the bootstrap model (quick runs, tests)."
    )
    default_train_overrides: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields over the default recipe (JSON)."
    )
    default_student: bool = Field(
        False,
        description="After the default model, distil the fast student from it and serve the "
        "student instead when it is within 0.5 points of it on every held-out test set (off: "
        "no student recipe has passed that bar here yet, BENCHMARKS.md issue 14).",
    )
    default_student_overrides: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields over the student recipe (JSON)."
    )
    rescore_batch: int = Field(64, ge=1, le=10_000, description="Items a rescore page (bulk).")
    rescore_max_rate: float = Field(
        0.0, ge=0, description="Most items/s a rescore runs at; 0 = as fast as `nice` allows."
    )
    rescore_nice: int = Field(
        10, ge=0, le=19, description="CPU niceness of a rescore, so live scoring comes first."
    )
    rescore_yield_lag: int = Field(
        100,
        ge=0,
        description="A rescore pauses between pages while the live worker has more than this "
        "many items waiting on the raw topic (its consumer lag); 0 = never.",
    )
    run_stop_grace: float = Field(
        20.0, gt=0, description="Seconds `finsentry run`'s children get to stop, then killed."
    )

    # --- alerts, dashboards, API ------------------------------------------------------
    webhook_urls: list[str] = Field(default_factory=list)
    slack_webhook_urls: list[str] = Field(default_factory=list)
    alert_rules_file: Path | None = Field(None, description="AlertRules as YAML or JSON.")
    grafana_webhook_url: SecretStr | None = Field(None, description="Grafana contact point URL.")
    dead_letters_index: str = Field(
        "finsentry-dead-letters", description="DeadLetter documents (shown in Grafana)."
    )
    grafana_url: str = "http://localhost:3000"
    grafana_token: SecretStr | None = None
    grafana_admin_password: SecretStr | None = None
    api_token: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_rate_limit: int = Field(120, ge=0, description="Requests a client a minute; 0 = off.")

    # --- sources (sources/): RSS/Atom, EDGAR, JSON polling, HTTP push ------------------
    sources_file: Path | None = Field(None, description="The sources to poll (YAML).")
    sources_user_agent: str = Field(
        "finsentry/0.1 (set FINSENTRY_SOURCES_USER_AGENT to 'name email')",
        description="User-Agent of every poll; SEC EDGAR wants one naming you.",
    )
    sources_timeout: float = Field(20.0, gt=0, description="Seconds per poll request.")
    sources_max_bytes: int = Field(
        5_000_000, ge=1024, description="Larger responses are refused (a counted error)."
    )
    sources_max_backoff: float = Field(
        900.0, gt=0, description="Most seconds a failing source waits before trying again."
    )
    sources_max_redirects: int = Field(5, ge=0)
    sources_remember: int = Field(
        5000, ge=10, description="Sent entry ids each source remembers (no re-sends)."
    )
    source_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Values for ${NAME} in source URLs and headers (JSON, or __NAME vars).",
    )
    sources_metrics_port: int = Field(
        9102, ge=0, le=65535, description="The sources runner's Prometheus endpoint; 0 = off."
    )
    push_max_bytes: int = Field(
        2_000_000, ge=1024, description="Largest body POST /v1/items accepts (else 413)."
    )

    # --- alerts: watchlists, channels, e-mail, digest (alerts/) ------------------------
    watchlists_index: str = Field("finsentry-watchlists", description="Watchlist documents.")
    alert_channel_urls: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Webhook or Slack URL per channel name that watchlists route to (JSON).",
    )
    smtp_host: str | None = Field(None, description="SMTP server for e-mail channels.")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "finsentry@localhost"
    smtp_tls: str = Field("none", pattern="^(none|starttls|ssl)$", description="none|starttls|ssl")
    smtp_timeout: float = Field(10.0, gt=0)
    digest_at: str | None = Field(
        "20:30", description="UTC HH:MM of the daily watchlist digest e-mail; empty = off."
    )
    alerter_instance_id: str | None = Field(
        None,
        description="Kafka static group membership id of this alerter, unique among the "
        "alerters of one app id (default: the host name); a restarted alerter takes its "
        "partitions back at once instead of after the session timeout.",
    )

    # --- analyst feedback, re-training, drift watch (feedback/, training/retrain.py, drift/)
    feedback_index: str = Field("finsentry-feedback", description="Analysts' labels.")
    api_analyst_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Analyst name -> bearer token (JSON); labels are stored under the name.",
    )
    retrain_feedback_weight: int = Field(
        5, ge=1, le=100, description="Copies of each feedback example in re-training."
    )
    retrain_holdout: float = Field(
        0.2, ge=0, lt=1, description="Share of the labelled items held out from re-training."
    )
    retrain_tolerance: float = Field(
        0.0, ge=0, le=0.2, description="How far below the live model a candidate may score."
    )
    retrain_every_hours: float = Field(
        0.0, ge=0, description="`finsentry run` re-trains this often (hours); 0 = never."
    )
    retrain_min_feedback: int = Field(
        20, ge=0, description="Scheduled re-training waits for this many new labels."
    )
    drift_index: str = Field("finsentry-drift", description="Hourly drift rows.")
    drift_reference: Path | None = Field(
        None, description="A drift reference JSON; default: built from the live model."
    )
    drift_threshold: float = Field(
        0.25, gt=0, description="Population stability index at which an hour has drifted."
    )
    drift_min_items: int = Field(50, ge=1, description="Fewer items in an hour: no verdict.")
    drift_sample: int = Field(2000, ge=10, le=10_000, description="Items read per hour.")
    drift_interval: float = Field(300.0, gt=0, description="Seconds between drift updates.")
    drift_metrics_port: int = Field(
        9103, ge=0, le=65535, description="The drift watcher's Prometheus endpoint; 0 = off."
    )

    @field_validator("alert_channel_urls", mode="before")
    @classmethod
    def _no_channels(cls, value: object) -> object:
        """`[]` (docker-compose's empty default for URL lists) means no channels."""
        return {} if value in ([], None) else value

    @field_validator("company_files", mode="after")
    @classmethod
    def _companies_default(cls, value: list[Path], info) -> list[Path]:  # type: ignore[no-untyped-def]
        if value:
            return value
        data_dir = info.data.get("data_dir", _DEFAULT_DATA_DIR)
        return default_company_files(Path(data_dir))

    @model_validator(mode="after")
    def _waits_in_order(self) -> Self:
        if self.min_wait > self.max_wait:
            raise ValueError("FINSENTRY_MIN_WAIT must not be above FINSENTRY_MAX_WAIT")
        return self

    @model_validator(mode="after")
    def _local_kafka_ca(self) -> Self:
        """Clients of the local SASL_SSL broker trust the CA it made (services/kafka.py)."""
        tls = "SSL" in self.kafka_security_protocol.upper()
        if self.manage_services and tls and self.kafka_ssl_cafile is None:
            self.kafka_ssl_cafile = local_kafka_ca_file(self.state_dir)
        return self

    def kafka_client_options(self) -> dict[str, object]:
        """Security options in kafka-python's spelling (also accepted by aiokafka)."""
        options: dict[str, object] = {"security_protocol": self.kafka_security_protocol}
        sasl = "SASL" in self.kafka_security_protocol.upper()
        mechanism = self.kafka_sasl_mechanism or ("PLAIN" if sasl else None)  # as Faust does
        if mechanism:
            options["sasl_mechanism"] = mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return options
