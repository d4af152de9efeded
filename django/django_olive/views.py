"""Django's side of olive's HTTP contracts: the recovery endpoint (olive
asks it, never a browser), the token refresh, and the comment fragments
olive.js fetches."""

import time

import django_comments
from django.db.models import Q
from django.http import Http404, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import comments, conf, grants, tokens, ulid
from .keys import object_for_key
from .models import LoggedMessage


def visible_comments(obj, user):
    """The comments on `obj` that `user` may see: the public ones, their own
    pending ones, and every pending one for a moderator."""
    qs = django_comments.get_model().objects.for_model(obj).filter(is_removed=False)
    qs = qs.select_related("user").order_by("submit_date", "pk")
    if user.is_authenticated and grants.is_moderator(user):
        return qs
    if user.is_authenticated:
        return qs.filter(Q(is_public=True) | Q(user=user))
    return qs.filter(is_public=True)


def from_olive(request):
    """True for a direct request from an allowed address: olive's recovery
    request carries no X-Forwarded-For, and everything olive proxies does."""
    allowed = conf.get("OLIVE_RECOVERY_ALLOWED_IPS")
    forwarded = "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META
    return not forwarded and request.META.get("REMOTE_ADDR") in allowed


@require_GET
@never_cache
def recover(request):
    """`GET ?key=K&since=ID` → `{"messages":[{"id":..,"data":..}]}`: what was
    published on K after ID, oldest first, exactly as published. 404 when
    ID is older than the log keeps or the gap is too large: the client
    then refetches."""
    if not from_olive(request):
        return HttpResponseForbidden("recovery is for olive only\n")
    key, since = request.GET.get("key", ""), request.GET.get("since", "").upper()
    since_ms = ulid.timestamp_ms(since)
    if since_ms is None or since_ms < (time.time() - int(conf.get("OLIVE_LOG_TTL"))) * 1000:
        raise Http404("since is not an id the log can still answer for")
    limit = int(conf.get("OLIVE_RECOVERY_MAX"))
    rows = LoggedMessage.objects.filter(key=key, id__gt=since).order_by("id").values("id", "data")
    rows = list(rows[: limit + 1])
    if len(rows) > limit:
        raise Http404("too many messages since then")
    return JsonResponse({"messages": rows})


@require_GET
@never_cache
def token(request):
    """Mints a fresh token cookie for the objects named by `?key=` (and those
    of the current token); olive.js calls it before a token expires and
    on close code 4401."""
    objects = [o for o in (object_for_key(k) for k in request.GET.getlist("key")) if o is not None]
    response = JsonResponse({"user": request.user.is_authenticated})
    tokens.set_cookie(request, response, objects)
    return response


@require_GET
@never_cache
def comment_list(request):
    """The rendered comment list of the object `?key=K`, as the requester may
    see it: olive.js refetches it when a reconnect could not be recovered."""
    obj = object_for_key(request.GET.get("key", ""))
    if obj is None or not grants.can_view(request.user, obj):
        raise Http404("no such object")
    html = "".join(comments.render(c) for c in visible_comments(obj, request.user))
    return HttpResponse(html, content_type="text/html; charset=utf-8")


@require_GET
@never_cache
def posted(request):
    """Where the comment form's `next` points: the new comment, rendered,
    for the author's page to show at once."""
    pk = request.GET.get("c", "")
    comment = get_object_or_404(django_comments.get_model(), pk=pk if pk.isdigit() else None, is_removed=False)
    own = comment.user_id is not None and comment.user_id == request.user.pk
    if not (comment.is_public or own or grants.is_moderator(request.user)):
        raise Http404("no such comment")
    return JsonResponse({"comment": comment.pk, "html": comments.render(comment)})
