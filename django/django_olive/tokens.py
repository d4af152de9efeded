"""The JWT olive verifies (claims in olive's docs/PROTOCOL.md, "Tokens"),
minted for the logged-in user and set as the `olive_token` cookie.

One cookie serves every tab of a site, so a token carries the objects of
the last few pages (claim `olive_keys`, ignored by olive) and a new token
re-grants them together with the new page's objects.
"""

import time

import jwt
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import conf
from .keys import object_for_key, object_key


def display_name(user):
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return full or user.get_username()


def grants_for(user, objects):
    return import_string(conf.get("OLIVE_GRANTS"))(user, objects)


def secret():
    value = conf.get("OLIVE_TOKEN_SECRET")
    if not value:
        raise ImproperlyConfigured("set OLIVE_TOKEN_SECRET (the secret olive's [[auth.key]] verifies with)")
    return value


def claims(user, objects, now=None):
    now = int(now if now is not None else time.time())
    keys = []
    for obj in objects:
        key = object_key(obj)
        if key not in keys:
            keys.append(key)
    body = {
        "sub": str(user.pk),
        "name": display_name(user),
        "grants": grants_for(user, objects),
        "olive_keys": keys,
        "aud": conf.get("OLIVE_TOKEN_AUDIENCE"),
        "iss": conf.get("OLIVE_TOKEN_ISSUER"),
        "iat": now,
        "exp": now + int(conf.get("OLIVE_TOKEN_TTL")),
    }
    amqp_user = conf.get("OLIVE_AMQP_USER")
    if amqp_user:
        body["amqp_user"] = amqp_user
    return body


def mint(user, objects, now=None):
    return jwt.encode(
        claims(user, objects, now),
        secret(),
        algorithm=conf.get("OLIVE_TOKEN_ALGORITHM"),
        headers={"kid": conf.get("OLIVE_TOKEN_KID")},
    )


def decode(token):
    """The claims of a token we minted and that is still valid, else None."""
    try:
        return jwt.decode(
            token,
            secret(),
            algorithms=[conf.get("OLIVE_TOKEN_ALGORITHM")],
            audience=conf.get("OLIVE_TOKEN_AUDIENCE"),
            issuer=conf.get("OLIVE_TOKEN_ISSUER"),
        )
    except jwt.PyJWTError:
        return None


def objects_for_request(request, objects):
    """`objects` first, then those of the request's current token (same user),
    at most OLIVE_TOKEN_MAX_KEYS."""
    result = list(objects)
    seen = {object_key(o) for o in result}
    old = request.COOKIES.get(conf.get("OLIVE_TOKEN_COOKIE"))
    previous = decode(old) if old else None
    if previous and previous.get("sub") == str(request.user.pk):
        for key in previous.get("olive_keys", []):
            if key not in seen:
                obj = object_for_key(key)
                if obj is not None:
                    result.append(obj)
                    seen.add(key)
    return result[: int(conf.get("OLIVE_TOKEN_MAX_KEYS"))]


def set_cookie(request, response, objects):
    """Sets (or, for an anonymous visitor, deletes) the token cookie."""
    name = conf.get("OLIVE_TOKEN_COOKIE")
    if not request.user.is_authenticated:
        if name in request.COOKIES:
            response.delete_cookie(name, samesite="Lax")
        return None
    token = mint(request.user, objects_for_request(request, objects))
    response.set_cookie(
        name,
        token,
        max_age=int(conf.get("OLIVE_TOKEN_TTL")),
        secure=bool(conf.get("OLIVE_COOKIE_SECURE")),
        httponly=True,
        samesite="Lax",
    )
    return token
