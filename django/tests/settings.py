import tempfile

from demo_site.settings import *  # noqa: F401,F403

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
MEDIA_ROOT = tempfile.mkdtemp(prefix="olive-test-media-")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
OLIVE_TOKEN_SECRET = "test-secret-0123456789abcdef0123456789"
OLIVE_PUBLISHER = "tests.support.RecordingPublisher"
LOGGING = {"version": 1, "disable_existing_loggers": False}
