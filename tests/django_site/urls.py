from django.urls import path

import views

urlpatterns = [
    path("whoami/", views.whoami),
    path("form/", views.form),
    path("upload/", views.upload),
    path("slow/", views.slow),
]
