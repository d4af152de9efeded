"""Image annotations: a comments app for `COMMENTS_APP =
"django_olive.annotations"` whose comment may carry a rectangle on the
object's image (x, y, w, h as fractions of its width and height)."""


def get_model():
    from .models import AnnotatedComment

    return AnnotatedComment


def get_form():
    from .forms import AnnotatedCommentForm

    return AnnotatedCommentForm
