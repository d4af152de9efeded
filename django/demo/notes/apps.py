from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "notes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django_comments.moderation import CommentModerator, moderator

        from .models import Note

        class NoteModerator(CommentModerator):
            """Comments on a note marked `moderated` wait for a moderator."""

            def moderate(self, comment, content_object, request):
                return content_object.moderated

        if Note not in moderator._registry:
            moderator.register(Note, NoteModerator)
