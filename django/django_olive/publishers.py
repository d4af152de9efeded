"""Publisher backends: AMQP (RabbitMQ, olive's `olive` topic exchange) and
HTTP (olive's `POST /olive/publish`, for the embedded broker).

`publish(key, data)` returns the message id once the broker took the
message, and raises `PublishError` otherwise: the caller logs it with the
key; the comment itself is safe in the database.
"""

import json
import logging
import threading
import urllib.error
import urllib.request

from django.utils.module_loading import import_string

from . import conf, ulid

log = logging.getLogger("django_olive")


class PublishError(Exception):
    pass


class AmqpPublisher:
    """One connection per process, reused, with publisher confirms. A
    publish that finds the connection gone reconnects once and retries;
    pika's blocking connection is not thread-safe, hence the lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._connection = None
        self._channel = None

    def _connect(self):
        import pika

        params = pika.URLParameters(conf.get("OLIVE_AMQP_URL"))
        params.connection_attempts = 1
        params.socket_timeout = conf.get("OLIVE_PUBLISH_TIMEOUT")
        params.blocked_connection_timeout = conf.get("OLIVE_PUBLISH_TIMEOUT")
        self._connection = pika.BlockingConnection(params)
        self._channel = self._connection.channel()
        self._channel.exchange_declare(conf.get("OLIVE_EXCHANGE"), exchange_type="topic", durable=True)
        self._channel.confirm_delivery()

    def _send(self, key, body, message_id):
        import pika

        if self._channel is None or self._channel.is_closed or self._connection.is_closed:
            self._connect()
        self._channel.basic_publish(
            conf.get("OLIVE_EXCHANGE"),
            key,
            body,
            pika.BasicProperties(
                content_type="application/json", message_id=message_id, delivery_mode=2
            ),
        )

    def publish(self, key, data):
        import pika.exceptions

        body = json.dumps(data, separators=(",", ":")).encode()
        message_id = ulid.new()
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._send(key, body, message_id)
                    return message_id
                except (pika.exceptions.AMQPError, OSError) as e:
                    self.close()
                    if attempt == 2:
                        raise PublishError(f"AMQP publish on {key} failed: {e!r}") from e
        raise AssertionError("unreachable")

    def close(self):
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # already broken: nothing left to close
                pass


class HttpPublisher:
    """olive's publish API; olive assigns the id."""

    def publish(self, key, data):
        body = json.dumps({"key": key, "data": data}, separators=(",", ":")).encode()
        request = urllib.request.Request(
            conf.get("OLIVE_PUBLISH_URL"), data=body, headers={"Content-Type": "application/json"}
        )
        admin_token = conf.get("OLIVE_ADMIN_TOKEN")
        if admin_token:
            request.add_header("Authorization", f"Bearer {admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=conf.get("OLIVE_PUBLISH_TIMEOUT")) as resp:
                return json.load(resp)["id"]
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            raise PublishError(f"HTTP publish on {key} failed: {e!r}") from e


BACKENDS = {"amqp": AmqpPublisher, "http": HttpPublisher}
_publisher = None
_publisher_setting = None
_publisher_lock = threading.Lock()


def get_publisher():
    """The process's publisher, made on first use (again if the setting changed)."""
    global _publisher, _publisher_setting
    setting = conf.get("OLIVE_PUBLISHER")
    with _publisher_lock:
        if _publisher is None or _publisher_setting != setting:
            cls = BACKENDS.get(setting) or import_string(setting)
            _publisher, _publisher_setting = cls(), setting
        return _publisher
