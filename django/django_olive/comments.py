"""Comments going live: what is published, to which keys, and when.

A posted, edited, approved or removed comment is published only after its
transaction commits (`transaction.on_commit`): a rollback publishes
nothing. Moderation decides the audience (keys.py): a comment awaiting
moderation goes to `K.moderation` and to its author's `K.user.ID`; an
approval publishes it on `K`; a removal is a tombstone on every one of them.
"""

import datetime
import logging
import secrets

import django_comments
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.template.loader import render_to_string
from django.utils import timezone
from django_comments.signals import comment_was_posted

from . import conf, ulid
from .keys import author_key, make_key, moderation_key
from .models import LoggedMessage
from .publishers import PublishError, get_publisher

log = logging.getLogger("django_olive")


def comment_key(comment):
    ct = comment.content_type
    return make_key(ct.app_label, ct.model, comment.object_pk)


def rect_of(comment):
    """The annotation rectangle (fractions of the image), if the comments
    app has one."""
    fields = [getattr(comment, f, None) for f in ("x", "y", "w", "h")]
    if any(v is None for v in fields):
        return None
    return dict(zip(("x", "y", "w", "h"), fields))


def author_name(comment):
    if comment.user_id and comment.user:
        full = comment.user.get_full_name()
        return full or comment.user.get_username()
    return comment.name


def render(comment):
    return render_to_string(
        "olive/comment.html",
        {"comment": comment, "author": author_name(comment), "rect": rect_of(comment)},
    )


def payload(comment, op):
    if op == "removed":
        return {"type": "comment", "op": "removed", "comment": comment.pk}
    return {
        "type": "comment",
        "op": op,
        "comment": comment.pk,
        "user": author_name(comment),
        "date": comment.submit_date.isoformat(),
        "text": comment.comment,
        "html": render(comment),
        "rect": rect_of(comment),
        "public": comment.is_public,
    }


def audience(comment, op):
    """The keys a change goes out on."""
    key = comment_key(comment)
    private = [moderation_key(key)] + ([author_key(key, comment.user_id)] if comment.user_id else [])
    if op == "removed":
        return [key] + private
    if comment.is_public:
        return [key]
    return private


def publish_now(key, data):
    """Publishes one message and logs it for recovery. A failed publish is
    logged with its key and still recorded: clients that reconnect or
    reload get it from Django."""
    try:
        message_id = get_publisher().publish(key, data)
    except PublishError as e:
        log.error("olive publish failed for key %s: %s", key, e)
        message_id = ulid.new()
    LoggedMessage.objects.create(id=message_id, key=key, data=data)
    prune()
    return message_id


def prune():
    """Drops logged messages older than OLIVE_LOG_TTL, now and then."""
    if secrets.randbelow(32):  # about one call in 32
        return
    cutoff = timezone.now() - datetime.timedelta(seconds=int(conf.get("OLIVE_LOG_TTL")))
    LoggedMessage.objects.filter(created__lt=cutoff).delete()


def publish_comment(comment, op):
    """Publishes `comment` once the current transaction commits."""
    messages = [(key, payload(comment, op)) for key in audience(comment, op)]

    def send():
        for key, data in messages:
            publish_now(key, data)

    transaction.on_commit(send)


def on_posted(sender, comment, request=None, **kwargs):
    publish_comment(comment, "posted")


def remember_state(sender, instance, raw=False, **kwargs):
    if raw or instance.pk is None:
        return
    old = sender.objects.filter(pk=instance.pk).values("is_public", "is_removed").first()
    instance._olive_old = old


def on_saved(sender, instance, created, raw=False, **kwargs):
    """Edits, approvals and removals; new comments go out on
    comment_was_posted, after the comments framework's checks."""
    old = getattr(instance, "_olive_old", None)
    if raw or created or old is None:
        return
    instance._olive_old = {"is_public": instance.is_public, "is_removed": instance.is_removed}
    if instance.is_removed:
        if not old["is_removed"]:
            publish_comment(instance, "removed")
    elif instance.is_public and (old["is_removed"] or not old["is_public"]):
        publish_comment(instance, "approved")
    else:
        publish_comment(instance, "edited")


def connect():
    model = django_comments.get_model()
    comment_was_posted.connect(on_posted, dispatch_uid="django_olive.posted")
    pre_save.connect(remember_state, sender=model, dispatch_uid="django_olive.pre_save")
    post_save.connect(on_saved, sender=model, dispatch_uid="django_olive.post_save")
