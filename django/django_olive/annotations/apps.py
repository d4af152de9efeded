from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    name = "django_olive.annotations"
    label = "olive_annotations"
    verbose_name = "olive image annotations"
    default_auto_field = "django.db.models.BigAutoField"
