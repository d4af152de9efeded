from django.db import models


class LoggedMessage(models.Model):
    """A message Django published, kept for the recovery endpoint: olive
    asks for the messages on a key after an id when its own history
    cannot cover a client's reconnect gap."""

    id = models.CharField(max_length=26, primary_key=True)
    key = models.CharField(max_length=255)
    data = models.JSONField()
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["key", "id"])]

    def __str__(self):
        return f"{self.key} {self.id}"


class PersistedMessage(models.Model):
    """A client-published comment the persister saved, by message id, so
    that a redelivery creates no second comment."""

    message_id = models.CharField(max_length=64, primary_key=True)
    comment_id = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.message_id
