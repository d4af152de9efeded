"""`{% olive_comments object %}` (optionally `image=URL` for annotations):
the comment list, the django-contrib-comments form and the live client,
wired to the object's key. Needs `request` in the context and
`OliveTokenMiddleware`, which sets the token cookie for the page."""

import django_comments
from django import template
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import mark_safe

from .. import comments, conf, grants, tokens
from ..keys import object_key
from ..views import visible_comments

register = template.Library()


@register.simple_tag(takes_context=True)
def olive_comments(context, obj, image=None):
    request = context["request"]
    user = request.user
    if not hasattr(request, "olive_objects"):
        request.olive_objects = []
    request.olive_objects.append(obj)
    key = object_key(obj)
    granted = tokens.grants_for(user, [obj]) if user.is_authenticated else {}
    private = [k for k in granted.get("subscribe", []) if k.startswith(key + ".")]
    live = {
        "key": key,
        "keys": [key] + private,
        "url": conf.get("OLIVE_LIVE_URL"),
        "token_url": reverse("django_olive:token"),
        "comments_url": reverse("django_olive:comments"),
        "user": {"id": str(user.pk), "name": tokens.display_name(user)} if user.is_authenticated else None,
        "publish": key in granted.get("publish", []),
    }
    html = render_to_string(
        "olive/comments.html",
        {
            "key": key,
            "live": live,
            "image": image,
            "comments": [mark_safe(comments.render(c)) for c in visible_comments(obj, user)],
            "form": django_comments.get_form()(obj),
            "form_target": django_comments.get_form_target(),
            "next": reverse("django_olive:posted"),
            "can_view": grants.can_view(user, obj),
        },
        request=request,
    )
    return mark_safe(html)
