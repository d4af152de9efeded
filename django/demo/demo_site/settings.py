"""The demo site: notes with images, live comments through olive.
Everything that differs between a run and the tests comes from the
environment (scripts/demo and the end-to-end test set it)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("OLIVE_DEMO_DATA", BASE_DIR / "var"))
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret-0123456789abcdef")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django_comments",
    "django_olive",
    "django_olive.annotations",
    "notes",
]
COMMENTS_APP = "django_olive.annotations"
SITE_ID = 1

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_olive.middleware.OliveTokenMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "demo_site.wsgi.application"

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "demo.sqlite3"}}

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_URL = "/media/"
MEDIA_ROOT = DATA_DIR / "media"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
USE_TZ = True

# Behind olive's TLS.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

# olive: the token secret is shared with olive's [[auth.key]] (kid "demo").
OLIVE_TOKEN_SECRET = os.environ.get("OLIVE_TOKEN_SECRET")
OLIVE_TOKEN_KID = "demo"
OLIVE_KEY_PREFIX = "olive"
OLIVE_PUBLISHER = os.environ.get("OLIVE_PUBLISHER", "http")
OLIVE_PUBLISH_URL = os.environ.get("OLIVE_PUBLISH_URL", "http://127.0.0.1:9090/olive/publish")
OLIVE_AMQP_URL = os.environ.get("OLIVE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
OLIVE_EXCHANGE = os.environ.get("OLIVE_EXCHANGE", "olive")

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_olive": {"handlers": ["console"], "level": "INFO"}},
}
