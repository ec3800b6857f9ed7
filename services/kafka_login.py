"""Refuse to start a long-running Kafka client whose credentials or CA the broker rejects.

A wrong SASL password or an untrusted broker certificate is a configuration error, not an
outage: left alone, Faust logs it and waits for ever, and kafka-python blocks for a minute
with "Unable to bootstrap". One connection (TLS handshake and SASL login) at start-up turns it
into a clear error within seconds. An unreachable broker is not an error here: the clients
retry it as they retry any outage.
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor

from finsentry.settings import Settings


class KafkaLoginError(RuntimeError):
    """The broker refused the configured credentials, mechanism or CA; the message says
    which setting to check and never contains a secret."""


def _address(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if "SSL" not in settings.kafka_security_protocol.upper():
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaLoginError(f"FINSENTRY_KAFKA_SSL_CAFILE ({cafile}) is unusable: {exc}") from None


async def verify_kafka_login_async(settings: Settings, timeout: float = 10.0) -> None:
    """Connect once to each bootstrap server until one answers; raise KafkaLoginError when
    one refuses the login or its certificate. PLAINTEXT: nothing to verify."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        IllegalSaslStateError,
        KafkaError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return
    context = _ssl_context(settings)
    sasl = "SASL" in protocol
    mechanism = settings.kafka_sasl_mechanism or "PLAIN"
    password = settings.kafka_sasl_password
    for server in settings.kafka_bootstrap.split(","):
        host, port = _address(server)
        where = f"Kafka at {host}:{port}"
        try:
            connection = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    ssl_context=context,
                    security_protocol=protocol,
                    sasl_mechanism=mechanism,
                    sasl_plain_username=settings.kafka_sasl_username if sasl else None,
                    sasl_plain_password=password.get_secret_value() if sasl and password else None,
                ),
                timeout,
            )
        except (SaslAuthenticationFailed, IllegalSaslStateError) as exc:
            raise KafkaLoginError(
                f"{where} refused the {mechanism} login of user "
                f"{settings.kafka_sasl_username!r}: {exc}. Check FINSENTRY_KAFKA_SASL_USERNAME "
                "and FINSENTRY_KAFKA_SASL_PASSWORD."
            ) from None
        except UnsupportedSaslMechanismError as exc:
            raise KafkaLoginError(
                f"{where} does not accept SASL mechanism {mechanism}: {exc}. "
                "Check FINSENTRY_KAFKA_SASL_MECHANISM."
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise KafkaLoginError(
                f"{where} presented a certificate that is not trusted ({exc.verify_message}). "
                f"Check FINSENTRY_KAFKA_SSL_CAFILE ({settings.kafka_ssl_cafile or 'unset'})."
            ) from None
        except (OSError, TimeoutError, KafkaError):
            continue  # unreachable or not answering: the client retries like any outage
        connection.close()
        return


def verify_kafka_login(settings: Settings, timeout: float = 10.0) -> None:
    """`verify_kafka_login_async` from synchronous code (also inside a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(verify_kafka_login_async(settings, timeout))
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, verify_kafka_login_async(settings, timeout)).result()
