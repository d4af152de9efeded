from django.test import TestCase, override_settings

from django_olive import ulid
from django_olive.keys import author_key, make_key, moderation_key, object_for_key, object_key, split_key

from .support import make_note


class KeyTests(TestCase):
    def test_key_is_prefix_app_model_pk(self):
        note = make_note()
        self.assertEqual(object_key(note), f"olive.notes.note.{note.pk}")

    @override_settings(OLIVE_KEY_PREFIX="site2")
    def test_prefix_comes_from_the_setting(self):
        note = make_note()
        self.assertEqual(object_key(note), f"site2.notes.note.{note.pk}")
        self.assertEqual(object_for_key(f"site2.notes.note.{note.pk}"), note)
        self.assertIsNone(object_for_key(f"olive.notes.note.{note.pk}"))

    def test_reverse_lookup(self):
        note = make_note()
        self.assertEqual(object_for_key(object_key(note)), note)

    def test_reverse_lookup_of_what_is_not_an_object(self):
        note = make_note()
        for key in [
            "olive.notes.note.999999",
            "olive.notes.nosuchmodel.1",
            "olive.nosuchapp.note.1",
            "olive.notes.note.abc",
            "olive.notes.note",
            moderation_key(object_key(note)),
            author_key(object_key(note), 1),
            "",
        ]:
            self.assertIsNone(object_for_key(key), key)

    def test_segments_must_be_key_safe(self):
        with self.assertRaises(ValueError):
            make_key("notes", "note", "a.b")
        with self.assertRaises(ValueError):
            make_key("notes", "note", "")
        self.assertEqual(split_key("olive.notes.note.7"), ("notes", "note", "7"))

    def test_audience_keys_hang_below_the_object_key(self):
        self.assertEqual(moderation_key("olive.notes.note.7"), "olive.notes.note.7.moderation")
        self.assertEqual(author_key("olive.notes.note.7", 3), "olive.notes.note.7.user.3")


class UlidTests(TestCase):
    def test_ids_increase_and_carry_their_time(self):
        ids = [ulid.new() for _ in range(1000)]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 1000)
        self.assertTrue(all(len(i) == 26 for i in ids))
        self.assertIsNotNone(ulid.timestamp_ms(ids[0]))
        self.assertIsNone(ulid.timestamp_ms("not-an-id"))

    def test_olive_ids_parse(self):
        # An id olive made (src/live/id.rs): 26 Crockford base32 characters.
        self.assertGreater(ulid.timestamp_ms("01J9Z3ABCDEFGHJKMNPQRSTVWX"), 1_700_000_000_000)
