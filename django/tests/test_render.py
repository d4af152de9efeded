import json
import re

import django_comments
from django.test import TestCase

from django_olive.comments import payload
from django_olive.keys import object_key

from .support import make_note, make_user, reset


def live_config(html):
    return json.loads(re.search(r'<script type="application/json">(.*?)</script>', html, re.S).group(1))


class RenderTests(TestCase):
    def setUp(self):
        reset()
        self.ann = make_user("ann")
        self.note = make_note()
        self.note.image = "notes/x.svg"
        self.note.save()
        self.key = object_key(self.note)
        Comment = django_comments.get_model()
        common = {"content_object": self.note, "site_id": 1}
        self.public = Comment.objects.create(user=self.ann, comment="<b>public</b>", x=0.5, y=0.5, w=0.25, h=0.1, **common)
        self.pending = Comment.objects.create(user=self.ann, comment="mine, pending", is_public=False, **common)
        self.removed = Comment.objects.create(user=self.ann, comment="removed one", is_removed=True, **common)

    def page(self, user=None):
        if user:
            self.client.force_login(user)
        return self.client.get(self.note.get_absolute_url(), secure=True).content.decode()

    def test_the_tag_renders_list_form_image_and_live_config(self):
        html = self.page(self.ann)
        self.assertIn("&lt;b&gt;public&lt;/b&gt;", html)  # escaped
        self.assertIn("mine, pending", html)  # the author sees their own pending comment
        self.assertNotIn("removed one", html)
        self.assertIn('action="/comments/post/"', html)
        self.assertIn('name="security_hash"', html)
        self.assertIn('name="x"', html)
        self.assertIn('src="/media/notes/x.svg"', html)
        self.assertIn('src="/static/olive/olive.js"', html)
        self.assertNotIn('name="email"', html)  # known from the logged-in user
        cfg = live_config(html)
        self.assertEqual(cfg["key"], self.key)
        self.assertEqual(cfg["keys"], [self.key, f"{self.key}.user.{self.ann.pk}"])
        self.assertEqual(cfg["user"], {"id": str(self.ann.pk), "name": "Ann"})
        self.assertTrue(cfg["publish"])
        self.assertEqual(cfg["url"], "/olive")

    def test_others_do_not_see_pending_comments_moderators_do(self):
        html = self.page(make_user("bob"))
        self.assertNotIn("mine, pending", html)
        html = self.page(make_user("mod", moderator=True))
        self.assertIn("mine, pending", html)
        self.assertIn(f"{self.key}.moderation", live_config(html)["keys"])

    def test_anonymous_page(self):
        html = self.page()
        self.assertNotIn("mine, pending", html)
        cfg = live_config(html)
        self.assertEqual(cfg["keys"], [self.key])
        self.assertIsNone(cfg["user"])
        self.assertFalse(cfg["publish"])
        self.assertIn('name="email"', html)

    def test_comment_template(self):
        html = payload(self.public, "posted")["html"]
        self.assertIn(f'data-comment="{self.public.pk}"', html)
        self.assertIn('data-rect="0.5,0.5,0.25,0.1"', html)
        self.assertIn("Ann", html)
        self.assertIn("awaiting moderation", payload(self.pending, "posted")["html"])

    def test_comment_list_fragment_for_refetch(self):
        self.client.force_login(make_user("bob"))
        resp = self.client.get("/_olive/comments/", {"key": self.key}, secure=True)
        self.assertEqual(resp.status_code, 200)
        body = resp.content.decode()
        self.assertIn(f'id="olive-c{self.public.pk}"', body)
        self.assertNotIn("mine, pending", body)
        self.assertEqual(self.client.get("/_olive/comments/", {"key": "olive.notes.note.999"}).status_code, 404)

    def test_posted_comment_is_only_for_who_may_see_it(self):
        self.client.force_login(make_user("bob"))
        self.assertEqual(self.client.get("/_olive/posted/", {"c": self.pending.pk}).status_code, 404)
        self.assertEqual(self.client.get("/_olive/posted/", {"c": self.public.pk}).status_code, 200)
        self.assertEqual(self.client.get("/_olive/posted/", {"c": self.removed.pk}).status_code, 404)
        self.assertEqual(self.client.get("/_olive/posted/", {"c": "x"}).status_code, 404)
        # An anonymous author's pending comment is not every anonymous visitor's.
        anonymous = django_comments.get_model().objects.create(
            content_object=self.note, site_id=1, user_name="guest", comment="anon pending", is_public=False
        )
        self.client.logout()
        self.assertEqual(self.client.get("/_olive/posted/", {"c": anonymous.pk}).status_code, 404)
