from django import forms
from django_comments.forms import CommentForm


def fraction():
    return forms.FloatField(required=False, min_value=0.0, max_value=1.0, widget=forms.HiddenInput)


class AnnotatedCommentForm(CommentForm):
    """The comments form plus an optional rectangle (all four or none),
    which must lie within the image."""

    x = fraction()
    y = fraction()
    w = fraction()
    h = fraction()

    def clean(self):
        data = super().clean()
        values = [data.get(k) for k in "xywh"]
        if any(v is not None for v in values):
            if any(v is None for v in values):
                raise forms.ValidationError("A rectangle needs x, y, w and h.")
            x, y, w, h = values
            if w <= 0 or h <= 0 or x + w > 1.0001 or y + h > 1.0001:
                raise forms.ValidationError("The rectangle must lie within the image.")
        return data

    def get_comment_create_data(self, site_id=None):
        data = super().get_comment_create_data(site_id=site_id)
        for k in "xywh":
            data[k] = self.cleaned_data.get(k)
        return data
