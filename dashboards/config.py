"""What the generated Grafana objects depend on: index names, fields, uids, alert rules."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from finsentry.alerts.rules import AlertRules
from finsentry.settings import ELASTICSEARCH_VERSION, Settings

ES_TYPE = "elasticsearch"
FOLDER_UID = "finsentry"
FOLDER_TITLE = "finsentry"

ITEMS_DS_UID = "finsentry-items"
VERDICTS_DS_UID = "finsentry-company-verdicts"
ALERTS_DS_UID = "finsentry-alerts"
DEAD_LETTERS_DS_UID = "finsentry-dead-letters"
DRIFT_DS_UID = "finsentry-drift"

ITEMS_TIME_FIELD = "scored_at"
ALERTS_TIME_FIELD = "window_end"
DEAD_LETTERS_TIME_FIELD = "failed_at"
DRIFT_TIME_FIELD = "hour"

MARKET_UID = "finsentry-market"
PIPELINE_UID = "finsentry-pipeline"
ALERTS_UID = "finsentry-alerts-board"
CONTACT_POINT = "finsentry-webhook"
RULE_GROUP = "finsentry-sentiment"

# Grafana expands ${VAR} in provisioning files from its own environment; `push` does the
# same from this process's environment. Names follow the FINSENTRY_* settings.
ES_USER_ENV = "FINSENTRY_ES_USERNAME"
ES_PASSWORD_ENV = "FINSENTRY_ES_PASSWORD"
WEBHOOK_URL_ENV = "FINSENTRY_GRAFANA_WEBHOOK_URL"

# Where docker-compose.yml mounts dashboards/provisioning.
PROVISIONING_MOUNT = "/etc/grafana/provisioning"


def _default(name: str) -> str:
    return str(Settings.model_fields[name].default)


class GrafanaConfig(BaseModel):
    """The inputs of every generated file. Defaults are those of Settings, so the committed
    provisioning tree is reproducible regardless of the environment."""

    model_config = ConfigDict(extra="forbid")

    items_index: str = Field(default_factory=lambda: _default("items_index"))
    company_verdicts_index: str = Field(default_factory=lambda: _default("company_verdicts_index"))
    alerts_index: str = Field(default_factory=lambda: _default("alerts_index"))
    dead_letters_index: str = Field(default_factory=lambda: _default("dead_letters_index"))
    drift_index: str = Field(default_factory=lambda: _default("drift_index"))
    es_url: str = Field(
        "http://elasticsearch:9200", description="Elasticsearch as Grafana sees it."
    )
    es_version: str = ELASTICSEARCH_VERSION
    rules: AlertRules = Field(default_factory=AlertRules)

    @classmethod
    def from_settings(
        cls, settings: Settings, rules: AlertRules, es_url: str | None = None
    ) -> GrafanaConfig:
        extra = {"es_url": es_url} if es_url else {}
        return cls(
            items_index=settings.items_index,
            company_verdicts_index=settings.company_verdicts_index,
            alerts_index=settings.alerts_index,
            dead_letters_index=settings.dead_letters_index,
            drift_index=settings.drift_index,
            es_version=settings.elasticsearch_version,
            rules=rules,
            **extra,
        )
