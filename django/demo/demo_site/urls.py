from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.static import serve

from notes import views

urlpatterns = [
    path("", views.note_list, name="note-list"),
    path("notes/<int:pk>/", views.note_detail, name="note-detail"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("comments/", include("django_comments.urls")),
    # olive's live route is /olive; Django's own endpoints sit beside it.
    path("_olive/", include("django_olive.urls")),
    path("admin/", admin.site.urls),
    # olive serves /media/ from disk; this is for running Django alone.
    path("media/<path:path>", serve, {"document_root": settings.MEDIA_ROOT}),
]
