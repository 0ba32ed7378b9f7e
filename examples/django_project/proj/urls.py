from accounts import views
from django.urls import path

urlpatterns = [
    path("", views.index),
    path("signup/", views.signup),
]
