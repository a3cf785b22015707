"""Every Kafka client's connection settings, in one place: bootstrap, SASL, TLS, and acks.

Both client libraries of the project take them from here: confluent-kafka (librdkafka) through
``confluent_config`` / ``producer_config`` / ``consumer_config``, faust and aiokafka through
``faust_app_kwargs`` / ``aiokafka_kwargs``. A client that builds its own dictionary would miss
the credentials on a secured cluster, so every call site starts from these.

The security protocol is ``ROOMSTREAM_KAFKA_SECURITY_PROTOCOL`` when set; otherwise a SASL user
turns SASL on and a CA or client certificate turns TLS on (``SASL_SSL`` with both). The SASL
password is read from ``ROOMSTREAM_KAFKA_SASL_PASSWORD_FILE`` when the client is built, so a
rotated secret is picked up by the next process without a restart of anything else.

Producers always wait for every in-sync replica (``acks=all``) and are idempotent: with
``min.insync.replicas`` of 2 a record acknowledged is on two brokers, and a retried send is not
written twice.
"""

from __future__ import annotations

import ssl
from typing import Any

from pipeline.config import Settings
from pipeline.connection_log import ConnectionStates, LibrdkafkaLog
from pipeline.errors import ConfigError

__all__ = [
    "aiokafka_kwargs",
    "confluent_config",
    "consumer_config",
    "faust_app_kwargs",
    "producer_config",
    "security_protocol",
    "ssl_context",
]


# The process's view of each broker, shared by its clients so an outage is told once.
KAFKA_BROKERS = ConnectionStates("Kafka broker")


def security_protocol(settings: Settings) -> str:
    if settings.kafka_security_protocol:
        return settings.kafka_security_protocol.upper()
    sasl = settings.kafka_sasl_username is not None
    tls = settings.kafka_ca_file is not None or settings.kafka_cert_file is not None
    return {
        (False, False): "PLAINTEXT",
        (False, True): "SSL",
        (True, False): "SASL_PLAINTEXT",
        (True, True): "SASL_SSL",
    }[(sasl, tls)]


def _password(settings: Settings) -> str:
    if settings.kafka_sasl_password_file is not None:
        try:
            return settings.kafka_sasl_password_file.read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"ROOMSTREAM_KAFKA_SASL_PASSWORD_FILE={settings.kafka_sasl_password_file} cannot "
                f"be read ({e.strerror}); point it at the file holding the SASL password"
            ) from None
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password
    raise ConfigError(
        f"ROOMSTREAM_KAFKA_SASL_USERNAME={settings.kafka_sasl_username} is set without a "
        "password; set ROOMSTREAM_KAFKA_SASL_PASSWORD_FILE (or ROOMSTREAM_KAFKA_SASL_PASSWORD)"
    )


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka's settings for any client (admin, consumer, producer), ``extra`` over them.

    Its log lines go through ``pipeline.connection_log``: one line per broker state change, not
    one per reconnection attempt."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        **LibrdkafkaLog(KAFKA_BROKERS).config(),
    }
    protocol = security_protocol(settings)
    if protocol != "PLAINTEXT":
        config["security.protocol"] = protocol
    if protocol.startswith("SASL"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username or ""
        config["sasl.password"] = _password(settings)
    if protocol.endswith("SSL"):
        if settings.kafka_ca_file is not None:
            config["ssl.ca.location"] = str(settings.kafka_ca_file)
        if settings.kafka_cert_file is not None and settings.kafka_key_file is not None:
            config["ssl.certificate.location"] = str(settings.kafka_cert_file)
            config["ssl.key.location"] = str(settings.kafka_key_file)
    config.update(extra)
    return config


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A producer's settings: acknowledged by every in-sync replica, idempotent."""
    return confluent_config(
        settings, **{"acks": "all", "enable.idempotence": True, "linger.ms": 5, **extra}
    )


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    """A consumer's settings; Roomstream's consumers read only committed transactions."""
    return confluent_config(
        settings, **{"group.id": group_id, "isolation.level": "read_committed", **extra}
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of aiokafka's connections, or None without TLS."""
    if not security_protocol(settings).endswith("SSL"):
        return None
    ca = str(settings.kafka_ca_file) if settings.kafka_ca_file is not None else None
    context = ssl.create_default_context(cafile=ca)
    if settings.kafka_cert_file is not None and settings.kafka_key_file is not None:
        context.load_cert_chain(str(settings.kafka_cert_file), str(settings.kafka_key_file))
    return context


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka's client arguments (``AIOKafkaProducer(**...)``, ``AIOKafkaConsumer(**...)``)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": security_protocol(settings),
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if kwargs["security_protocol"].startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = _password(settings)
    return kwargs


def faust_app_kwargs(settings: Settings) -> dict[str, Any]:
    """``faust.App`` arguments: the brokers, their credentials, and ``acks=all``."""
    import faust

    kwargs: dict[str, Any] = {
        "broker": [f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
        "producer_acks": -1,
    }
    protocol = security_protocol(settings)
    context = ssl_context(settings)
    if protocol.startswith("SASL"):
        kwargs["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=_password(settings),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    elif context is not None:
        kwargs["broker_credentials"] = faust.SSLCredentials(context)
    return kwargs
