import time

from django.test import TestCase, override_settings

from django_olive import ulid
from django_olive.comments import publish_now

from .support import reset


class RecoveryTests(TestCase):
    KEY = "olive.notes.note.1"

    def setUp(self):
        reset()

    def recover(self, since, key=KEY, **extra):
        return self.client.get("/_olive/recover/", {"key": key, "since": since}, REMOTE_ADDR="127.0.0.1", **extra)

    def test_the_messages_after_since_oldest_first_exactly_as_published(self):
        since = ulid.new()
        ids = [publish_now(self.KEY, {"type": "comment", "n": n}) for n in range(3)]
        publish_now("olive.notes.note.2", {"other": True})
        resp = self.recover(since)
        self.assertEqual(resp.status_code, 200)
        self.assertEqual(resp["Content-Type"], "application/json")
        self.assertEqual(
            resp.json(), {"messages": [{"id": i, "data": {"type": "comment", "n": n}} for n, i in enumerate(ids)]}
        )
        self.assertEqual(self.recover(ids[1]).json()["messages"], [{"id": ids[2], "data": {"type": "comment", "n": 2}}])
        self.assertEqual(self.recover(ids[2]).json(), {"messages": []})

    def test_unknown_or_too_old_since_is_404(self):
        self.assertEqual(self.recover("garbage").status_code, 404)
        old = ulid.encode(int((time.time() - 2 * 86400) * 1000) << 80)
        self.assertEqual(self.recover(old).status_code, 404)

    @override_settings(OLIVE_RECOVERY_MAX=2)
    def test_too_large_a_gap_is_404(self):
        since = ulid.new()
        for n in range(3):
            publish_now(self.KEY, {"n": n})
        self.assertEqual(self.recover(since).status_code, 404)

    def test_only_olive_may_ask(self):
        since = ulid.new()
        # Through olive's proxy (a browser): X-Forwarded-For is always set.
        self.assertEqual(self.recover(since, HTTP_X_FORWARDED_FOR="203.0.113.9").status_code, 403)
        resp = self.client.get("/_olive/recover/", {"key": self.KEY, "since": since}, REMOTE_ADDR="203.0.113.9")
        self.assertEqual(resp.status_code, 403)
