"""With real RabbitMQ on 127.0.0.1:5672 (guest/guest): the AMQP publisher
and the persister. Skipped without it, failed under CI=true."""

import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path

import django_comments
import pika
import pika.exceptions
from django.core.management import call_command
from django.test import SimpleTestCase, TransactionTestCase, override_settings

from django_olive import publishers
from django_olive.keys import object_key
from django_olive.models import LoggedMessage

from .support import comment_post, make_note, make_user, rabbitmq_or_skip, reset

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEMO = Path(__file__).resolve().parent.parent / "demo"
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


class PersisterSurvivesConnectionLossTests(SimpleTestCase):
    """`manage.py olive_persist` as operators run it (a process on the demo
    site with its own SQLite file), its connection closed by RabbitMQ as
    in a broker restart: it reconnects, and what was published meanwhile
    waits in the durable queue and is saved, once."""

    def setUp(self):
        rabbitmq_or_skip()
        self.ctl = shutil.which("rabbitmqctl")
        if not self.ctl:
            if os.environ.get("CI") == "true":
                raise AssertionError("CI=true: rabbitmqctl is required to close the persister's connection")
            self.skipTest("no rabbitmqctl")
        self.dir = Path(tempfile.mkdtemp(prefix="olive-persist-"))
        self.exchange = "olive-persist-" + secrets.token_hex(4)
        self.queue = self.exchange + ".queue"
        self.env = dict(os.environ, OLIVE_DEMO_DATA=str(self.dir), OLIVE_EXCHANGE=self.exchange,
                        DJANGO_SETTINGS_MODULE="demo_site.settings", OLIVE_TOKEN_SECRET="x" * 32)
        self.manage = [sys.executable, str(DEMO / "manage.py")]
        for args in (["migrate", "-v0"], ["demo_setup"]):
            subprocess.run(self.manage + args, env=self.env, check=True, capture_output=True)
        self.db = sqlite3.connect(self.dir / "demo.sqlite3")
        self.ann = self.db.execute("select id from auth_user where username = 'ann'").fetchone()[0]
        self.log = open(self.dir / "persist.log", "w+")
        self.proc = subprocess.Popen(self.manage + ["olive_persist", "--queue", self.queue], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.connection, self.ch = channel()
        self.ch.exchange_declare(self.exchange, exchange_type="topic", durable=True)

    def tearDown(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.ch.queue_delete(self.queue)
        self.ch.exchange_delete(self.exchange)
        self.connection.close()
        self.db.close()

    def publish(self, message_id, text):
        props = pika.BasicProperties(message_id=message_id, headers={"olive-user": str(self.ann)})
        body = json.dumps({"type": "comment", "text": text}).encode()
        self.ch.basic_publish(self.exchange, "olive.notes.note.1", body, props)

    def wait_count(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = self.db.execute("select count(*) from django_comments").fetchone()[0]
            if count >= n:
                return count
            time.sleep(0.1)
        self.log.seek(0)
        self.fail(f"{count} comments, expected {n}; persister log:\n{self.log.read()}")

    def close_persister_connection(self):
        listing = subprocess.run([self.ctl, "-q", "list_connections", "pid", "client_properties"],
                                 capture_output=True, text=True, check=True).stdout
        mine = f"olive_persist {socket.gethostname()} {self.proc.pid}"
        pids = [line.split("\t")[0] for line in listing.splitlines() if mine in line]
        self.assertEqual(len(pids), 1, listing)
        subprocess.run([self.ctl, "-q", "close_connection", pids[0], "test: as in a restart"], check=True)

    def test_reconnects_and_saves_what_arrived_meanwhile_once(self):
        deadline = time.monotonic() + 20
        while True:  # the persister declares its queue when it is up
            try:
                probe = self.connection.channel()
                probe.queue_declare(self.queue, passive=True)
                probe.close()
                break
            except pika.exceptions.ChannelClosedByBroker:
                self.assertLess(time.monotonic(), deadline, "the persister never declared its queue")
                time.sleep(0.2)
        self.publish("01JBBBBBBBBBBBBBBBBBBBBBB1", "before the cut")
        self.assertEqual(self.wait_count(1), 1)
        self.close_persister_connection()
        self.publish("01JBBBBBBBBBBBBBBBBBBBBBB2", "during the cut")
        self.publish("01JBBBBBBBBBBBBBBBBBBBBBB1", "before the cut")  # a redelivery
        self.assertEqual(self.wait_count(2), 2)
        time.sleep(1)
        self.assertEqual(self.wait_count(2), 2, "the redelivery made no second comment")
        self.assertIsNone(self.proc.poll(), "the persister is still running")
        self.log.seek(0)
        self.assertIn("RabbitMQ unavailable", self.log.read())
