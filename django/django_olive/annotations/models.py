from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django_comments.models import Comment

FRACTION = [MinValueValidator(0.0), MaxValueValidator(1.0)]


class AnnotatedComment(Comment):
    """A comment, optionally on a rectangle of the object's image.

    A child of the framework's own Comment (multi-table), not of its
    abstract model: the moderation views' CommentFlag points at Comment."""

    x = models.FloatField(null=True, blank=True, validators=FRACTION)
    y = models.FloatField(null=True, blank=True, validators=FRACTION)
    w = models.FloatField(null=True, blank=True, validators=FRACTION)
    h = models.FloatField(null=True, blank=True, validators=FRACTION)

    class Meta:
        db_table = "olive_annotated_comments"
