from django.apps import AppConfig


class OliveConfig(AppConfig):
    name = "django_olive"
    label = "django_olive"
    verbose_name = "olive"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import comments

        comments.connect()
