"""Who may do what on which keys. `OLIVE_GRANTS` names a callable
`(user, objects) -> {"subscribe": [...], "publish": [...], "presence": [...]}`
called when a token is minted; this is the default."""

from .keys import author_key, moderation_key, object_key


def can_view(user, obj):
    """An object may say who can view it with `olive_can_view(user)`;
    otherwise whoever can load its page can."""
    check = getattr(obj, "olive_can_view", None)
    return True if check is None else bool(check(user))


def is_moderator(user):
    return user.has_perm("django_comments.can_moderate")


def default_grants(user, objects):
    """A logged-in user may subscribe to and see presence on the objects they
    can view, and publish there (typing signals, comments for the
    persister); they also get their own pending comments, and moderators
    the moderation queue. Anonymous visitors get nothing."""
    grants = {"subscribe": [], "publish": [], "presence": []}
    if not (user.is_authenticated and user.is_active):
        return grants
    moderator = is_moderator(user)
    for obj in objects:
        if not can_view(user, obj):
            continue
        key = object_key(obj)
        grants["subscribe"] += [key, author_key(key, user.pk)]
        if moderator:
            grants["subscribe"].append(moderation_key(key))
        grants["publish"].append(key)
        grants["presence"].append(key)
    return grants
