"""The smallest Django site that exercises what olive must get right for a
real Django behind it: the HTTPS flag, the host, the client address, CSRF and
request bodies. No database, no sessions."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "olive-tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["www.example.test", "example.test", "localhost", "127.0.0.1"]

# olive terminates TLS and says how the client came in.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = True

# Origins are checked against the request's own scheme and host, so behind a
# correct proxy nothing needs listing here; this stays empty on purpose.
CSRF_TRUSTED_ORIGINS = []

# The upload test sends 3 MB; Django's default cap is 2.5 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

INSTALLED_APPS = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "urls"
WSGI_APPLICATION = "wsgi.application"
DATABASES = {}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
    }
]
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "WARNING"}},
}
