"""With real RabbitMQ on 127.0.0.1:5672 (guest/guest): the AMQP publisher
and the persister. Skipped without it, failed under CI=true."""

import json
import secrets
import time
from io import StringIO

import django_comments
import pika
from django.core.management import call_command
from django.test import TransactionTestCase, override_settings

from django_olive import publishers
from django_olive.keys import object_key
from django_olive.models import LoggedMessage

from .support import comment_post, make_note, make_user, rabbitmq_or_skip, reset

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PREFIX = "t" + secrets.token_hex(4)


def channel():
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    ch = connection.channel()
    ch.exchange_declare("olive", exchange_type="topic", durable=True)
    return connection, ch


def drain(ch, queue, wait=1.0):
    """Every message on `queue`, waiting `wait` after the last one."""
    got = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        got.append((method.routing_key, props, json.loads(body)))
        deadline = time.monotonic() + wait
    return got


@override_settings(OLIVE_PUBLISHER="amqp", OLIVE_AMQP_URL=URL, OLIVE_KEY_PREFIX=PREFIX)
class AmqpPublishTests(TransactionTestCase):
    def setUp(self):
        rabbitmq_or_skip()
        reset()
        self.connection, self.ch = channel()
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.note = make_note()
        self.key = object_key(self.note)
        self.ch.queue_bind(self.queue, "olive", routing_key=f"{PREFIX}.#")
        self.client.force_login(make_user("ann"))

    def tearDown(self):
        self.connection.close()

    def test_a_comment_post_yields_one_message_with_the_objects_routing_key(self):
        resp = comment_post(self.client, self.note, "over AMQP")
        self.assertEqual(resp.status_code, 302)
        [(routing_key, props, data)] = drain(self.ch, self.queue)
        self.assertEqual(routing_key, self.key)
        self.assertEqual(props.content_type, "application/json")
        self.assertEqual(props.message_id, LoggedMessage.objects.get().id)
        self.assertEqual(data["text"], "over AMQP")
        self.assertEqual(data["comment"], django_comments.get_model().objects.get().pk)

    def test_the_connection_is_reused_and_rebuilt_after_a_loss(self):
        publisher = publishers.get_publisher()
        publisher.publish(self.key, {"n": 1})
        first = publisher._connection
        publisher.publish(self.key, {"n": 2})
        self.assertIs(publisher._connection, first)
        first.close()  # as when RabbitMQ drops it
        publisher.publish(self.key, {"n": 3})
        self.assertIsNot(publisher._connection, first)
        self.assertEqual([d["n"] for _, _, d in drain(self.ch, self.queue)], [1, 2, 3])

    @override_settings(OLIVE_AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2F")
    def test_an_unreachable_broker_is_a_publish_error(self):
        with self.assertRaises(publishers.PublishError):
            publishers.AmqpPublisher().publish(self.key, {})


@override_settings(OLIVE_AMQP_URL=URL, OLIVE_KEY_PREFIX=PREFIX, OLIVE_PERSIST_QUEUE=f"{PREFIX}.persist")
class PersisterTests(TransactionTestCase):
    def setUp(self):
        rabbitmq_or_skip()
        reset()
        self.connection, self.ch = channel()
        self.ann = make_user("ann")
        self.note = make_note()

    def tearDown(self):
        self.ch.queue_delete(f"{PREFIX}.persist")
        self.connection.close()

    def publish(self, message_id, data, user):
        props = pika.BasicProperties(
            message_id=message_id, content_type="application/json", headers={"olive-user": user, "olive-name": "Ann"}
        )
        self.ch.basic_publish("olive", object_key(self.note), json.dumps(data).encode(), props)

    def test_a_redelivered_comment_is_saved_once(self):
        out = StringIO()
        # The durable queue exists from the first run on; later runs find
        # what was published while no persister was running.
        call_command("olive_persist", idle_exit=0.5, stdout=out)
        data = {"type": "comment", "text": "typed in a browser"}
        self.publish("01JAAAAAAAAAAAAAAAAAAAAAAA", data, str(self.ann.pk))
        self.publish("01JAAAAAAAAAAAAAAAAAAAAAAA", data, str(self.ann.pk))
        self.publish("01JAAAAAAAAAAAAAAAAAAAAAAB", {"type": "typing"}, str(self.ann.pk))
        call_command("olive_persist", idle_exit=1.0, stdout=out)
        [comment] = django_comments.get_model().objects.all()
        self.assertEqual((comment.comment, comment.user), ("typed in a browser", self.ann))
        self.assertIn("saved 01JAAAAAAAAAAAAAAAAAAAAAAA", out.getvalue())
        self.assertIn("duplicate 01JAAAAAAAAAAAAAAAAAAAAAAA", out.getvalue())
