from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django_comments.abstracts import CommentAbstractModel

FRACTION = [MinValueValidator(0.0), MaxValueValidator(1.0)]


class AnnotatedComment(CommentAbstractModel):
    """A comment, optionally on a rectangle of the object's image."""

    x = models.FloatField(null=True, blank=True, validators=FRACTION)
    y = models.FloatField(null=True, blank=True, validators=FRACTION)
    w = models.FloatField(null=True, blank=True, validators=FRACTION)
    h = models.FloatField(null=True, blank=True, validators=FRACTION)

    class Meta(CommentAbstractModel.Meta):
        db_table = "olive_annotated_comments"
