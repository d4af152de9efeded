"""Include under a prefix olive proxies to Django, e.g.
`path("_olive/", include("django_olive.urls"))`; olive's route for the
live hub (`/olive`) must not shadow it."""

from django.urls import path

from . import views

app_name = "django_olive"

urlpatterns = [
    path("recover/", views.recover, name="recover"),
    path("token/", views.token, name="token"),
    path("comments/", views.comment_list, name="comments"),
    path("posted/", views.posted, name="posted"),
]
