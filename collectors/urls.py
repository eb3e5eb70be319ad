"""URLs of the collectors app: configuration screens, then health and messages."""

from __future__ import annotations

from django.urls import include, path

from collectors.views import collection, fields, sources

urlpatterns: list = [
    path("", collection.collection, name="collection"),
    path("collectors/add/", collection.collector_add, name="collector-add"),
    path("collectors/<int:pk>/edit/", collection.collector_edit, name="collector-edit"),
    path(
        "collectors/<int:pk>/delete/",
        collection.collector_delete,
        name="collector-delete",
    ),
    path("collectors/<int:pk>/sources/new/", sources.source_types, name="source-types"),
    path(
        "collectors/<int:pk>/sources/new/knowbe4/",
        sources.source_add,
        name="source-add",
    ),
    path(
        "collectors/<int:pk>/sources/new/kmsat-reporting/",
        sources.source_add_reporting,
        name="source-add-reporting",
    ),
    path("sources/<int:pk>/edit/", sources.source_edit, name="source-edit"),
    path(
        "sources/test-connection/",
        sources.source_test_connection,
        name="source-test-connection",
    ),
    path(
        "sources/test-connection/reporting/",
        sources.source_test_connection_reporting,
        name="source-test-connection-reporting",
    ),
    path(
        "sources/quota-figures/",
        sources.source_quota_figures,
        name="source-quota-figures",
    ),
    path("sources/<int:pk>/delete/", sources.source_delete, name="source-delete"),
    path("fields/", fields.fields, name="fields"),
    path("fields/add/", fields.field_add, name="field-add"),
    path("fields/<int:pk>/enable/", fields.field_enable, name="field-enable"),
    path("fields/<int:pk>/disable/", fields.field_disable, name="field-disable"),
    path("fields/<int:pk>/delete/", fields.field_delete, name="field-delete"),
    path("", include("collectors.urls_health")),
]
