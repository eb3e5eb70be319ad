"""URLs for health, source pages and message search."""

from __future__ import annotations

urlpatterns: list = []
