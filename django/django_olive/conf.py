"""Settings with their defaults, read at call time so tests can override."""

import os

from django.conf import settings

DEFAULTS = {
    # First segment of every object key: one olive per Django site by default.
    "OLIVE_KEY_PREFIX": "olive",
    # Where the browser reaches olive's live route ({url}/ws, /sse, /publish).
    "OLIVE_LIVE_URL": "/olive",
    # Token signing: the secret olive's [[auth.key]] shares, its kid and alg.
    "OLIVE_TOKEN_SECRET": None,
    "OLIVE_TOKEN_KID": "olive",
    "OLIVE_TOKEN_ALGORITHM": "HS256",
    "OLIVE_TOKEN_AUDIENCE": "olive",
    "OLIVE_TOKEN_ISSUER": "django",
    # Short-lived: there is no revocation but expiry.
    "OLIVE_TOKEN_TTL": 300,
    "OLIVE_TOKEN_COOKIE": "olive_token",
    "OLIVE_COOKIE_SECURE": True,
    # The RabbitMQ user name a token's holder logs in as (claim amqp_user).
    "OLIVE_AMQP_USER": None,
    # Objects remembered in one token, so that tabs on different objects share it.
    "OLIVE_TOKEN_MAX_KEYS": 8,
    # callable(user, objects) -> {"subscribe": [...], "publish": [...], "presence": [...]}
    "OLIVE_GRANTS": "django_olive.grants.default_grants",
    # "amqp", "http", or the dotted path of a Publisher class.
    "OLIVE_PUBLISHER": "http",
    "OLIVE_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "OLIVE_EXCHANGE": "olive",
    "OLIVE_PUBLISH_URL": "http://127.0.0.1:9090/olive/publish",
    "OLIVE_ADMIN_TOKEN": None,
    "OLIVE_PUBLISH_TIMEOUT": 5.0,
    # How long published messages are kept for the recovery endpoint (seconds).
    "OLIVE_LOG_TTL": 86400,
    # Most messages one recovery answer holds; a bigger gap is a 404 (refetch).
    "OLIVE_RECOVERY_MAX": 500,
    # Peers allowed to ask the recovery endpoint (olive, on a private address).
    "OLIVE_RECOVERY_ALLOWED_IPS": ["127.0.0.1", "::1"],
    # The persister's durable queue.
    "OLIVE_PERSIST_QUEUE": "olive.persist",
}


def get(name):
    value = getattr(settings, name, DEFAULTS[name])
    if name == "OLIVE_TOKEN_SECRET" and not value:
        value = os.environ.get("OLIVE_TOKEN_SECRET")
    return value
