from django.db import models
from django.urls import reverse


class Note(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    image = models.FileField(upload_to="notes", blank=True)
    moderated = models.BooleanField(default=False, help_text="comments wait for a moderator")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("note-detail", args=[self.pk])
