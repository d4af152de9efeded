import django_comments
from django.db import transaction
from django.test import TransactionTestCase

from django_olive.keys import object_key
from django_olive.models import LoggedMessage

from .support import RecordingPublisher, comment_post, make_note, make_user, reset


class PublishTests(TransactionTestCase):
    """Real transactions (TransactionTestCase), so on_commit runs as in production."""

    def setUp(self):
        reset()
        self.ann = make_user("ann")
        self.note = make_note()
        self.key = object_key(self.note)
        self.client.force_login(self.ann)

    def sent(self):
        return [(key, data) for key, data, _ in RecordingPublisher.sent]

    def test_a_posted_comment_is_published_rendered(self):
        resp = comment_post(self.client, self.note, "Looks good", x="0.1", y="0.2", w="0.3", h="0.4")
        self.assertEqual(resp.status_code, 302, resp.content[:500])
        [(key, data)] = self.sent()
        comment = django_comments.get_model().objects.get()
        self.assertEqual(key, self.key)
        self.assertEqual(data["type"], "comment")
        self.assertEqual(data["op"], "posted")
        self.assertEqual(data["comment"], comment.pk)
        self.assertEqual(data["user"], "Ann")
        self.assertEqual(data["text"], "Looks good")
        self.assertEqual(data["rect"], {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4})
        self.assertTrue(data["public"])
        self.assertIn(f'id="olive-c{comment.pk}"', data["html"])
        self.assertIn("<p>Looks good</p>", data["html"])
        self.assertIn('data-rect="0.1,0.2,0.3,0.4"', data["html"])
        self.assertEqual(data["date"], comment.submit_date.isoformat())
        # Logged for the recovery endpoint under the id it went out with.
        logged = LoggedMessage.objects.get()
        self.assertEqual((logged.key, logged.id), (self.key, RecordingPublisher.sent[0][2]))

    def test_the_author_gets_the_rendered_comment_back(self):
        resp = comment_post(self.client, self.note, "hello")
        follow = self.client.get(resp["Location"], secure=True)
        self.assertEqual(follow.json()["html"], self.sent()[0][1]["html"])

    def test_published_only_after_commit(self):
        with transaction.atomic():
            comment_post(self.client, self.note, "inside a transaction")
            self.assertEqual(self.sent(), [])
        self.assertEqual(len(self.sent()), 1)

    def test_nothing_on_rollback(self):
        class Rollback(Exception):
            pass

        with self.assertRaises(Rollback):
            with transaction.atomic():
                comment_post(self.client, self.note, "never happened")
                raise Rollback()
        self.assertEqual(self.sent(), [])
        self.assertFalse(django_comments.get_model().objects.exists())
        self.assertFalse(LoggedMessage.objects.exists())

    def test_invalid_comments_publish_nothing(self):
        resp = comment_post(self.client, self.note, "")
        self.assertEqual(resp.status_code, 200)  # the framework's preview with errors
        self.assertEqual(self.sent(), [])

    def test_edit_approve_remove(self):
        comment_post(self.client, self.note, "first")
        comment = django_comments.get_model().objects.get()
        reset()
        comment.comment = "first, edited"
        comment.save()
        comment.is_removed = True
        comment.save()
        ops = [(k, d["op"]) for k, d in self.sent()]
        mod, mine = f"{self.key}.moderation", f"{self.key}.user.{self.ann.pk}"
        self.assertEqual(
            ops, [(self.key, "edited"), (self.key, "removed"), (mod, "removed"), (mine, "removed")]
        )
        self.assertEqual(self.sent()[1][1], {"type": "comment", "op": "removed", "comment": comment.pk})
        self.assertEqual(self.sent()[0][1]["text"], "first, edited")

    def test_moderation_decides_the_audience(self):
        note = make_note("moderated", moderated=True)
        key = object_key(note)
        comment_post(self.client, note, "waiting")
        comment = django_comments.get_model().objects.get()
        self.assertFalse(comment.is_public)
        self.assertEqual(
            [(k, d["op"], d["public"]) for k, d in self.sent()],
            [(f"{key}.moderation", "posted", False), (f"{key}.user.{self.ann.pk}", "posted", False)],
        )
        # A moderator approves it through the framework's view: everyone gets it.
        reset()
        mod = make_user("mod", moderator=True)
        self.client.force_login(mod)
        resp = self.client.post(f"/comments/approve/{comment.pk}/", secure=True)
        self.assertEqual(resp.status_code, 302)
        self.assertEqual([(k, d["op"], d["public"]) for k, d in self.sent()], [(key, "approved", True)])
        # ... and deletes it: a tombstone on every audience.
        reset()
        self.client.post(f"/comments/delete/{comment.pk}/", secure=True)
        self.assertEqual([d["op"] for _, d in self.sent()], ["removed"] * 3)
        self.assertEqual(self.sent()[0][0], key)

    def test_a_failed_publish_keeps_the_comment_and_logs_the_key(self):
        RecordingPublisher.fail = True
        with self.assertLogs("django_olive", "ERROR") as logs:
            resp = comment_post(self.client, self.note, "kept")
        self.assertEqual(resp.status_code, 302)
        self.assertTrue(django_comments.get_model().objects.filter(comment="kept").exists())
        self.assertIn(self.key, logs.output[0])
        # Recovery still has it, for clients that reconnect.
        self.assertEqual(LoggedMessage.objects.get().key, self.key)
