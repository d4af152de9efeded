"""`manage.py olive_persist`: consumes the comments browsers publish over
olive's websocket from a durable queue bound to every object key, and saves
them (django_olive.persist). Acks only after the database commit; reconnects
with backoff and jitter when RabbitMQ goes away, and the durable queue keeps
what arrived meanwhile."""

import json
import logging
import os
import random
import socket
import time

import pika
import pika.exceptions
from django.core.management.base import BaseCommand
from django.db import DatabaseError

from django_olive import conf, persist

log = logging.getLogger("django_olive.persist")


def header_text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Command(BaseCommand):
    help = "Save comments that browsers publish over olive's websocket (type 'comment')."

    def add_arguments(self, parser):
        parser.add_argument("--url", default=None, help="AMQP URL (default OLIVE_AMQP_URL)")
        parser.add_argument("--queue", default=None, help="durable queue (default OLIVE_PERSIST_QUEUE)")
        parser.add_argument(
            "--idle-exit", type=float, default=None, help="exit after this many seconds without a message (tests)"
        )

    def handle(self, *args, url=None, queue=None, idle_exit=None, **options):
        url = url or conf.get("OLIVE_AMQP_URL")
        self.queue = queue or conf.get("OLIVE_PERSIST_QUEUE")
        delay = 0.5
        while True:
            try:
                if self.consume(url, idle_exit):
                    return
                delay = 0.5
            except (pika.exceptions.AMQPError, OSError) as e:
                wait = delay / 2 + random.random() * delay / 2
                log.warning("persister lost RabbitMQ (%r); reconnecting in %.1fs", e, wait)
                self.stderr.write(f"olive_persist: RabbitMQ unavailable ({e!r}), retrying in {wait:.1f}s")
                time.sleep(wait)
                delay = min(delay * 2, 30)

    def consume(self, url, idle_exit):
        """Consumes until the connection fails (raises) or, with
        `idle_exit`, until idle that long (returns True)."""
        params = pika.URLParameters(url)
        # Named, so that operators see it in `rabbitmqctl list_connections`.
        params.client_properties = {"connection_name": f"olive_persist {socket.gethostname()} {os.getpid()}"}
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            exchange, queue = conf.get("OLIVE_EXCHANGE"), self.queue
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, exchange, routing_key=conf.get("OLIVE_KEY_PREFIX") + ".#")
            channel.basic_qos(prefetch_count=16)
            self.stdout.write(f"olive_persist: consuming {queue}")
            for method, props, body in channel.consume(queue, inactivity_timeout=idle_exit or 1.0):
                if method is None:
                    if idle_exit:
                        return True
                    continue
                self.process(method.routing_key, props, body)
                channel.basic_ack(method.delivery_tag)
        finally:
            if connection.is_open:
                connection.close()

    def process(self, key, props, body):
        headers = props.headers or {}
        user = header_text(headers.get("olive-user"))
        try:
            data = json.loads(body)
        except ValueError:
            log.warning("persister skipped a message on %s that is not JSON", key)
            return
        try:
            result = persist.handle(key, props.message_id, data, user)
        except DatabaseError:
            raise  # unacked: RabbitMQ redelivers it once the command restarts
        except Exception:
            # Acked all the same: a message that breaks the handler would
            # otherwise come back forever. The error is logged with its key.
            log.exception("persister failed on message %s for key %s", props.message_id, key)
            return
        if result != persist.IGNORED:
            self.stdout.write(f"olive_persist: {result} {props.message_id} on {key}")
