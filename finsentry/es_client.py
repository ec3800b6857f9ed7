"""The one way to build an Elasticsearch client from Settings.

Secrets (password, API key) are read with `get_secret_value()` only here, passed straight to
the client and never logged; `describe_es_client` gives a loggable summary instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from finsentry.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import AsyncElasticsearch, Elasticsearch


def es_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `elasticsearch.Elasticsearch` (they contain secrets: never log)."""
    options: dict[str, Any] = {
        "hosts": [settings.es_url],
        "request_timeout": settings.es_request_timeout,
        "retry_on_timeout": settings.es_retry_on_timeout,
        "max_retries": settings.es_max_retries,
    }
    if settings.es_api_key is not None:
        options["api_key"] = settings.es_api_key.get_secret_value()
    elif settings.es_username:
        password = settings.es_password.get_secret_value() if settings.es_password else ""
        options["basic_auth"] = (settings.es_username, password)
    if settings.es_ca_certs is not None:
        options["ca_certs"] = str(settings.es_ca_certs)
    return options


def describe_es_client(settings: Settings) -> dict[str, Any]:
    """What `make_es_client` connects to and how, safe to log (no secret values)."""
    if settings.es_api_key is not None:
        auth = "api_key"
    elif settings.es_username:
        auth = f"basic:{settings.es_username}"
    else:
        auth = "none"
    return {
        "url": settings.es_url,
        "auth": auth,
        "ca_certs": str(settings.es_ca_certs) if settings.es_ca_certs else None,
        "request_timeout": settings.es_request_timeout,
        "retry_on_timeout": settings.es_retry_on_timeout,
        "max_retries": settings.es_max_retries,
    }


def make_es_client(settings: Settings) -> Elasticsearch:
    """An Elasticsearch client for `settings.es_url` with its auth, TLS and retry options.

    An API key wins over basic auth when both are set.
    """
    from elasticsearch import Elasticsearch

    return Elasticsearch(**es_client_options(settings))


def make_async_es_client(settings: Settings) -> AsyncElasticsearch:
    """The asyncio twin of `make_es_client`, with the same options."""
    from elasticsearch import AsyncElasticsearch

    return AsyncElasticsearch(**es_client_options(settings))
