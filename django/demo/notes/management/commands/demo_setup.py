"""`manage.py demo_setup`: the demo's users and notes, idempotently.
Prints the logins."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand

from notes.models import Note

PASSWORD = "olive-demo"
USERS = [("ann", "Ann Archer", False), ("bob", "Bob Baker", False), ("mod", "Mo Moderator", True)]

SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="800" height="500" viewBox="0 0 800 500">
<rect width="800" height="500" fill="{sky}"/>
<circle cx="640" cy="110" r="60" fill="#f5d04c"/>
<path d="M0 360 Q200 260 400 340 T800 320 V500 H0Z" fill="{land}"/>
<rect x="140" y="250" width="160" height="120" fill="#b5651d"/><path d="M120 250 L220 180 L320 250Z" fill="#8b0000"/>
<text x="24" y="48" font-family="sans-serif" font-size="32" fill="#fff">{title}</text>
</svg>"""

NOTES = [
    ("Harbour sketch", "Mark what should change on the drawing.", "#7fb3d5", "#6b8e23", False),
    ("Garden plan", "Comments here wait for a moderator.", "#a9cce3", "#556b2f", True),
]


class Command(BaseCommand):
    help = "Create the demo users (password 'olive-demo') and notes with images."

    def handle(self, *args, **options):
        User = get_user_model()
        moderate = Permission.objects.get(codename="can_moderate", content_type__app_label="django_comments")
        for username, full, is_mod in USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.first_name, user.last_name = full.split(" ", 1)
            user.email = f"{username}@example.test"
            user.set_password(PASSWORD)
            user.save()
            if is_mod:
                user.user_permissions.add(moderate)
        for title, body, sky, land, moderated in NOTES:
            note, created = Note.objects.get_or_create(title=title, defaults={"body": body, "moderated": moderated})
            if created or not note.image:
                svg = SVG.format(title=title, sky=sky, land=land).encode()
                note.image.save(f"note-{note.pk}.svg", ContentFile(svg), save=True)
        logins = ", ".join(f"{u} / {PASSWORD}" + (" (moderator)" if m else "") for u, _, m in USERS)
        self.stdout.write(f"demo logins: {logins}")
