"""Object keys: `PREFIX.app_label.model.pk` from the ContentType, and back.

Audience keys hang below an object's key: `K.moderation` for comments
awaiting moderation (moderators), `K.user.ID` for one author's own pending
comments. A subscriber of `K` or of `PREFIX.app.model.*` never sees them.
"""

import re

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist, ValidationError

from . import conf

SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")


def object_key(obj):
    ct = ContentType.objects.get_for_model(obj)
    return make_key(ct.app_label, ct.model, obj.pk)


def make_key(app_label, model, pk):
    parts = [conf.get("OLIVE_KEY_PREFIX"), app_label, model, str(pk)]
    for part in parts:
        if not SEGMENT.match(part):
            raise ValueError(f"{part!r} cannot be a key segment (letters, digits, _ and - only)")
    return ".".join(parts)


def split_key(key):
    """(app_label, model, pk) of an object key with our prefix, else None."""
    parts = key.split(".")
    if len(parts) != 4 or parts[0] != conf.get("OLIVE_KEY_PREFIX") or not all(map(SEGMENT.match, parts)):
        return None
    return parts[1], parts[2], parts[3]


def object_for_key(key):
    """The object a key names, or None when there is none."""
    parts = split_key(key)
    if parts is None:
        return None
    app_label, model, pk = parts
    try:
        ct = ContentType.objects.get_by_natural_key(app_label, model)
        return ct.get_object_for_this_type(pk=pk)
    except (ObjectDoesNotExist, ValidationError, ValueError, TypeError, AttributeError):
        # No such type or object, a pk of the wrong type, or a type whose
        # model is gone (model_class() is None).
        return None


def moderation_key(key):
    return f"{key}.moderation"


def author_key(key, user_id):
    return f"{key}.user.{user_id}"
