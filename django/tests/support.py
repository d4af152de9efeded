"""Test helpers: a publisher that records (unit level only: the AMQP and
end-to-end tests publish for real), users and notes."""

import os
import socket
import unittest

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from django_olive import publishers, ulid
from notes.models import Note


class RecordingPublisher:
    sent = []
    fail = False

    def publish(self, key, data):
        if RecordingPublisher.fail:
            raise publishers.PublishError("broker down (test)")
        message_id = ulid.new()
        RecordingPublisher.sent.append((key, data, message_id))
        return message_id


def reset():
    RecordingPublisher.sent.clear()
    RecordingPublisher.fail = False


def make_user(username, moderator=False):
    user = get_user_model().objects.create_user(username, f"{username}@example.test", "pw", first_name=username.title())
    if moderator:
        user.user_permissions.add(Permission.objects.get(codename="can_moderate", content_type__app_label="django_comments"))
    return user


def make_note(title="A note", moderated=False):
    return Note.objects.create(title=title, moderated=moderated)


def comment_post(client, note, text, **extra):
    """POSTs the comments framework's own form for `note`, as a browser would."""
    import django_comments

    form = django_comments.get_form()(note)
    data = {k: v for k, v in form.initial.items()}
    data.update(form.generate_security_data())
    data.update({"comment": text, "name": "x", "email": "x@example.test", "next": "/_olive/posted/"})
    data.update(extra)
    return client.post("/comments/post/", data, secure=True)


def rabbitmq_or_skip():
    """RabbitMQ on 127.0.0.1:5672, else skip; under CI=true, fail."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as e:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"CI=true: RabbitMQ is required on 127.0.0.1:5672 ({e})")
        raise unittest.SkipTest(f"no RabbitMQ on 127.0.0.1:5672 ({e})")
