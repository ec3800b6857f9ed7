"""Send the generated datasources, dashboards and alerting to a running Grafana over its
HTTP API (grafana-client). Every object is upserted by uid, so pushing twice is a no-op.

Values Grafana would take from its environment in the provisioning files (${VAR}) are taken
from `env` here, so the same documents serve both paths. Objects pushed through the API
cannot be edited in the UI of a Grafana that also file-provisions them: use one or the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal, NamedTuple

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from finsentry.dashboards.alerting import contact_point, grafana_rules, notification_policy
from finsentry.dashboards.config import (
    CONTACT_POINT,
    ES_PASSWORD_ENV,
    ES_USER_ENV,
    FOLDER_TITLE,
    FOLDER_UID,
    RULE_GROUP,
    WEBHOOK_URL_ENV,
    GrafanaConfig,
)
from finsentry.dashboards.provisioning import dashboards, datasources, expand_env
from finsentry.settings import Settings

log = logging.getLogger(__name__)

Action = Literal["created", "updated", "skipped"]


class Pushed(NamedTuple):
    kind: str
    uid: str
    action: Action


def push_env(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the provisioning files use, from Settings (hence FINSENTRY_* / .env)."""
    env = dict(environ)
    if settings.es_username:
        env[ES_USER_ENV] = settings.es_username
    if settings.es_password is not None:
        env[ES_PASSWORD_ENV] = settings.es_password.get_secret_value()
    if settings.grafana_webhook_url is not None:
        env[WEBHOOK_URL_ENV] = settings.grafana_webhook_url.get_secret_value()
    return env


def _exists(get: Callable[[], Any]) -> bool:
    try:
        get()
    except GrafanaClientError as error:
        if error.status_code == 404:
            return False
        raise
    return True


def _upsert(
    kind: str, uid: str, exists: bool, update: Callable[[], Any], create: Callable[[], Any]
) -> Pushed:
    """Update the object when Grafana has it, else create it."""
    if exists:
        update()
        return Pushed(kind, uid, "updated")
    create()
    return Pushed(kind, uid, "created")


def push(api: GrafanaApi, cfg: GrafanaConfig, env: Mapping[str, str]) -> list[Pushed]:
    """Upsert folder, datasources, dashboards, alert rules (and their group), contact point and
    notification policy. Returns what was done, in order."""
    done: list[Pushed] = []

    if _exists(lambda: api.folder.get_folder(FOLDER_UID)):
        done.append(Pushed("folder", FOLDER_UID, "skipped"))
    else:
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        done.append(Pushed("folder", FOLDER_UID, "created"))

    for source in datasources(cfg):
        body = expand_env({k: v for k, v in source.items() if k != "editable"}, env)
        uid = body["uid"]
        done.append(
            _upsert(
                "datasource",
                uid,
                _exists(partial(api.datasource.get_datasource_by_uid, uid)),
                update=partial(api.datasource.update_datasource_by_uid, uid, body),
                create=partial(api.datasource.create_datasource, body),
            )
        )

    for board in dashboards(cfg).values():
        api.dashboard.update_dashboard(
            {
                "dashboard": {**board, "id": None},
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "finsentry dashboards push",
            }
        )
        done.append(Pushed("dashboard", board["uid"], "updated"))

    rules = grafana_rules(cfg)
    for rule in rules:
        uid = rule["uid"]
        done.append(
            _upsert(
                "alert-rule",
                uid,
                _exists(partial(api.alertingprovisioning.get_alertrule, uid)),
                update=partial(api.alertingprovisioning.update_alertrule, uid, rule),
                create=partial(api.alertingprovisioning.create_alertrule, rule),
            )
        )
    group = {
        "title": RULE_GROUP,
        "folderUid": FOLDER_UID,
        "interval": cfg.rules.bucket_s,
        "rules": rules,
    }
    api.alertingprovisioning.update_rule_group(FOLDER_UID, RULE_GROUP, group)
    done.append(Pushed("rule-group", RULE_GROUP, "updated"))

    url = env.get(WEBHOOK_URL_ENV, "")
    if not url:
        log.warning("%s is not set: contact point and notification policy skipped", WEBHOOK_URL_ENV)
        done.append(Pushed("contact-point", CONTACT_POINT, "skipped"))
        return done
    point = contact_point(url)
    existing = api.alertingprovisioning.get_contactpoints(name=CONTACT_POINT) or []
    done.append(
        _upsert(
            "contact-point",
            CONTACT_POINT,
            any(p.get("uid") == CONTACT_POINT for p in existing),
            update=partial(api.alertingprovisioning.update_contactpoint, CONTACT_POINT, point),
            create=partial(api.alertingprovisioning.create_contactpoint, point),
        )
    )
    api.alertingprovisioning.set_notification_policy_tree(notification_policy())
    done.append(Pushed("policy", CONTACT_POINT, "updated"))
    return done
