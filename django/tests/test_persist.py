import django_comments
from django.test import TransactionTestCase

from django_olive import persist
from django_olive.keys import object_key

from .support import RecordingPublisher, make_note, make_user, reset


class PersistTests(TransactionTestCase):
    def setUp(self):
        reset()
        self.ann = make_user("ann")
        self.note = make_note()
        self.key = object_key(self.note)

    def test_saves_once_per_message_id(self):
        data = {"type": "comment", "text": "from the socket", "rect": {"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2}}
        self.assertEqual(persist.handle(self.key, "MSG1", data, str(self.ann.pk)), persist.SAVED)
        self.assertEqual(persist.handle(self.key, "MSG1", data, str(self.ann.pk)), persist.DUPLICATE)
        [comment] = django_comments.get_model().objects.all()
        self.assertEqual((comment.comment, comment.user, comment.content_object), ("from the socket", self.ann, self.note))
        self.assertEqual((comment.x, comment.w), (0.1, 0.2))
        # Saved through the framework: the signal path broadcast it, rendered.
        [(key, sent, _)] = RecordingPublisher.sent
        self.assertEqual((key, sent["op"], sent["comment"]), (self.key, "posted", comment.pk))
        self.assertEqual(persist.handle(self.key, "MSG2", data, str(self.ann.pk)), persist.SAVED)

    def test_what_it_leaves_alone(self):
        user = str(self.ann.pk)
        cases = [
            (self.key, "M", {"type": "typing"}, user, persist.IGNORED),
            (self.key, "M", {"type": "comment", "op": "posted", "html": "<p>x</p>"}, None, persist.IGNORED),
            (self.key, "M", {"type": "comment", "text": "no user"}, None, persist.IGNORED),
            (self.key, "M", {"type": "comment", "text": "   "}, user, persist.REJECTED),
            (self.key, "M", {"type": "comment", "text": "x" * 5000}, user, persist.REJECTED),
            ("olive.notes.note.99999", "M", {"type": "comment", "text": "x"}, user, persist.REJECTED),
            (self.key, "M", {"type": "comment", "text": "x"}, "99999", persist.REJECTED),
            (self.key, "M", ["not", "a", "dict"], user, persist.IGNORED),
        ]
        for key, mid, data, who, expected in cases:
            self.assertEqual(persist.handle(key, mid, data, who), expected, data)
        self.assertFalse(django_comments.get_model().objects.exists())

    def test_a_bad_rect_is_dropped_not_the_comment(self):
        data = {"type": "comment", "text": "t", "rect": {"x": 0.9, "y": 0, "w": 0.5, "h": 0.1}}
        self.assertEqual(persist.handle(self.key, "M3", data, str(self.ann.pk)), persist.SAVED)
        self.assertIsNone(django_comments.get_model().objects.get().x)
