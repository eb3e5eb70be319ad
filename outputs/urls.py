"""URLs of the outputs app."""

from __future__ import annotations

from django.urls import path

from outputs import views

urlpatterns = [
    path("outputs/", views.output_list, name="outputs"),
    path("outputs/add/", views.output_add, name="output-add"),
    path("outputs/<int:pk>/edit/", views.output_edit, name="output-edit"),
    path("outputs/<int:pk>/enable/", views.output_enable, name="output-enable"),
    path("outputs/<int:pk>/disable/", views.output_disable, name="output-disable"),
    path("outputs/<int:pk>/delete/", views.output_delete, name="output-delete"),
    path("outputs/<int:pk>/health/", views.output_health, name="output-health"),
]
