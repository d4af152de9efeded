import time

import jwt
from django.test import TestCase, override_settings

from django_olive import tokens
from django_olive.keys import object_key

from .support import make_note, make_user

SECRET = "test-secret-0123456789abcdef0123456789"


def no_grants(user, objects):
    return {"subscribe": [], "publish": [], "presence": []}


def read_only(user, objects):
    return {"subscribe": [object_key(o) for o in objects], "publish": [], "presence": []}


class ClaimTests(TestCase):
    def test_claims_olive_verifies(self):
        ann = make_user("ann")
        note = make_note()
        key = object_key(note)
        token = tokens.mint(ann, [note])
        header = jwt.get_unverified_header(token)
        self.assertEqual(header, {"alg": "HS256", "kid": "demo", "typ": "JWT"})
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="olive", issuer="django")
        self.assertEqual(claims["sub"], str(ann.pk))
        self.assertEqual(claims["name"], "Ann")
        self.assertEqual(claims["iss"], "django")
        self.assertEqual(claims["aud"], "olive")
        self.assertEqual(claims["exp"] - claims["iat"], 300)
        self.assertEqual(claims["grants"]["subscribe"], [key, f"{key}.user.{ann.pk}"])
        self.assertEqual(claims["grants"]["publish"], [key])
        self.assertEqual(claims["grants"]["presence"], [key])
        self.assertNotIn("amqp_user", claims)

    @override_settings(OLIVE_AMQP_USER="django-worker", OLIVE_TOKEN_TTL=60)
    def test_amqp_user_and_ttl_settings(self):
        claims = tokens.claims(make_user("ann"), [])
        self.assertEqual(claims["amqp_user"], "django-worker")
        self.assertEqual(claims["exp"] - claims["iat"], 60)

    def test_moderators_get_the_moderation_key(self):
        mod = make_user("mod", moderator=True)
        note = make_note()
        grants = tokens.claims(mod, [note])["grants"]
        self.assertIn(object_key(note) + ".moderation", grants["subscribe"])
        self.assertNotIn(object_key(note) + ".moderation", tokens.claims(make_user("bob"), [note])["grants"]["subscribe"])

    def test_objects_may_refuse_viewers(self):
        note = make_note()
        note.olive_can_view = lambda user: user.username != "carol"
        self.assertEqual(tokens.claims(make_user("carol"), [note])["grants"]["subscribe"], [])
        self.assertEqual(len(tokens.claims(make_user("dave"), [note])["grants"]["subscribe"]), 2)

    def test_inactive_users_get_nothing(self):
        ann = make_user("ann")
        ann.is_active = False
        self.assertEqual(tokens.claims(ann, [make_note()])["grants"]["subscribe"], [])

    @override_settings(OLIVE_GRANTS="tests.test_tokens.read_only")
    def test_grants_are_pluggable(self):
        note = make_note()
        grants = tokens.claims(make_user("ann"), [note])["grants"]
        self.assertEqual(grants, {"subscribe": [object_key(note)], "publish": [], "presence": []})


class CookieTests(TestCase):
    def setUp(self):
        self.ann = make_user("ann")
        self.note = make_note()

    def test_page_with_the_tag_sets_the_cookie(self):
        self.client.force_login(self.ann)
        resp = self.client.get(self.note.get_absolute_url(), secure=True)
        cookie = resp.cookies["olive_token"]
        self.assertTrue(cookie["httponly"])
        self.assertTrue(cookie["secure"])
        self.assertEqual(cookie["samesite"], "Lax")
        self.assertEqual(int(cookie["max-age"]), 300)
        claims = tokens.decode(cookie.value)
        self.assertEqual(claims["sub"], str(self.ann.pk))
        self.assertIn(object_key(self.note), claims["grants"]["subscribe"])

    def test_anonymous_visitors_get_no_token(self):
        resp = self.client.get(self.note.get_absolute_url(), secure=True)
        self.assertNotIn("olive_token", resp.cookies)

    def test_pages_without_the_tag_set_no_cookie(self):
        self.client.force_login(self.ann)
        self.assertNotIn("olive_token", self.client.get("/", secure=True).cookies)

    def test_a_new_token_keeps_the_other_tabs_objects(self):
        other = make_note("other")
        self.client.force_login(self.ann)
        self.client.get(other.get_absolute_url(), secure=True)
        resp = self.client.get(self.note.get_absolute_url(), secure=True)
        subscribe = tokens.decode(resp.cookies["olive_token"].value)["grants"]["subscribe"]
        self.assertIn(object_key(self.note), subscribe)
        self.assertIn(object_key(other), subscribe)

    def test_refresh_endpoint(self):
        self.client.force_login(self.ann)
        resp = self.client.get("/_olive/token/", {"key": object_key(self.note)}, secure=True)
        self.assertEqual(resp.status_code, 200)
        self.assertEqual(resp.json(), {"user": True})
        self.assertIn("no-store", resp["Cache-Control"])
        claims = tokens.decode(resp.cookies["olive_token"].value)
        self.assertIn(object_key(self.note), claims["grants"]["subscribe"])
        self.assertGreater(claims["exp"], time.time())

    def test_refresh_for_someone_logged_out_drops_the_cookie(self):
        self.client.cookies["olive_token"] = tokens.mint(self.ann, [self.note])
        resp = self.client.get("/_olive/token/", {"key": object_key(self.note)}, secure=True)
        self.assertEqual(resp.json(), {"user": False})
        self.assertEqual(resp.cookies["olive_token"].value, "")

    def test_tokens_of_other_users_are_not_merged(self):
        bob = make_user("bob")
        other = make_note("other")
        self.client.cookies["olive_token"] = tokens.mint(bob, [other])
        self.client.force_login(self.ann)
        resp = self.client.get(self.note.get_absolute_url(), secure=True)
        subscribe = tokens.decode(resp.cookies["olive_token"].value)["grants"]["subscribe"]
        self.assertNotIn(object_key(other), subscribe)
