"""The persister's work on one message: a comment a browser published on
an object's key over olive's websocket (`{"type":"comment","text":..,
"rect":{..}}`, the `olive-user` header naming its author) is saved through
the comments framework, signals and moderation included, so the normal
signal path then broadcasts the rendered comment. Idempotent by message
id: a redelivery creates no second comment."""

import logging

import django_comments
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_comments.signals import comment_was_posted, comment_will_be_posted

from .keys import object_for_key
from .models import PersistedMessage

log = logging.getLogger("django_olive.persist")

SAVED, DUPLICATE, IGNORED, REJECTED = "saved", "duplicate", "ignored", "rejected"


def valid_rect(rect):
    if not isinstance(rect, dict):
        return None
    try:
        x, y, w, h = (float(rect[k]) for k in "xywh")
    except (KeyError, TypeError, ValueError):
        return None
    if min(x, y) < 0 or w <= 0 or h <= 0 or x + w > 1.0001 or y + h > 1.0001:
        return None
    return {"x": x, "y": y, "w": w, "h": h}


def handle(key, message_id, data, user_id):
    """Saves one client-published comment; returns what happened."""
    if not user_id or not message_id or not isinstance(data, dict):
        return IGNORED
    if data.get("type") != "comment" or "op" in data or "html" in data:
        return IGNORED  # typing signals, Django's own broadcasts
    text = data.get("text")
    max_length = getattr(settings, "COMMENT_MAX_LENGTH", 3000)
    if not isinstance(text, str) or not text.strip() or len(text) > max_length:
        return REJECTED
    obj = object_for_key(key)
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if obj is None or user is None:
        return REJECTED
    if PersistedMessage.objects.filter(message_id=message_id).exists():
        return DUPLICATE
    model = django_comments.get_model()
    comment = model(
        content_type=ContentType.objects.get_for_model(obj),
        object_pk=str(obj.pk),
        user=user,
        user_name=user.get_full_name() or user.get_username(),
        user_email=user.email,
        comment=text,
        submit_date=timezone.now(),
        site_id=getattr(settings, "SITE_ID", 1),
        is_public=True,
        is_removed=False,
    )
    rect = valid_rect(data.get("rect"))
    if rect and all(hasattr(comment, k) for k in "xywh"):
        for k, v in rect.items():
            setattr(comment, k, v)
    try:
        with transaction.atomic():
            responses = comment_will_be_posted.send(sender=model, comment=comment, request=None)
            if any(result is False for _, result in responses):
                return REJECTED
            comment.save()
            PersistedMessage.objects.create(message_id=message_id, comment_id=str(comment.pk))
            comment_was_posted.send(sender=model, comment=comment, request=None)
    except IntegrityError:
        return DUPLICATE  # another persister saved it meanwhile
    return SAVED
