"""Monitors, Connections and the Notifications log (thin views: permission,
fetch, form or model method, redirect)."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from alerts import notify
from alerts.forms import ConnectionForm, MonitorForm
from alerts.models import Connection, Monitor, MonitorKind, Notification, Scope
from collectors.models import HealthEvent
from collectors.permissions import require
from collectors.views.health import PANEL_ORDER

VIEW_MONITORS = "alerts.view_monitors"
MANAGE_MONITORS = "alerts.manage_monitors"
PAGE_SIZE = 50
PREFILL_TEXT = {"category": 1024, "event_type": 255, "user_email": 254, "q": 200}


@require(VIEW_MONITORS)
@require_http_methods(["GET", "HEAD"])
def monitors(request):
    """Every monitor with its state and connections (two queries)."""
    rows = Monitor.objects.prefetch_related("connections").order_by("name", "pk")
    return render(request, "alerts/monitors.html", {"nav": "monitors", "rows": rows})


@require(VIEW_MONITORS)
@require_http_methods(["GET", "HEAD"])
def monitor_detail(request, pk: int):
    """A monitor, its history of triggers and its latest notifications."""
    monitor = get_object_or_404(Monitor, pk=pk)
    context = {
        "nav": "monitors",
        "monitor": monitor,
        "connections": list(monitor.connections.all()),
        "triggers": monitor.triggers.all()[:PAGE_SIZE],
        "notifications": Notification.objects.filter(trigger__monitor=monitor)[:20],
    }
    return render(request, "alerts/monitor_detail.html", context)


def _int(value: str | None) -> int | None:
    """A prefill id: ASCII digits within 63 bits, else nothing."""
    if value and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def prefill(params) -> dict:
    """Initial form values from a "Create monitor" link: the Messages page
    passes its filter (kind=log), a health event its source and condition."""
    if params.get("kind") == MonitorKind.LOG:
        initial = {"kind": MonitorKind.LOG}
        for key, limit in PREFILL_TEXT.items():
            if params.get(key):
                initial[key] = params[key][:limit]
        initial["log_source"] = _int(params.get("source"))
        initial["log_collector"] = _int(params.get("collector"))
        if params.get("risk_level", "").lstrip("-").isdigit():
            initial["risk_level"] = params["risk_level"][:3]
        what = initial.get("category") or initial.get("event_type") or "messages"
        initial["name"] = f"Log monitor: {what}"[:128]
        return initial
    if params.get("kind") == MonitorKind.HEALTH:
        initial = {"kind": MonitorKind.HEALTH, "condition": params.get("condition")}
        source = _int(params.get("source"))
        if source:
            initial.update(scope=Scope.SOURCES, sources=[source])
        initial["name"] = "Health monitor"
        return initial
    return {}


@require(MANAGE_MONITORS)
@require_http_methods(["GET", "HEAD", "POST"])
def monitor_add(request):
    """Add a monitor; a GET may carry a "Create monitor" link's prefill."""
    if request.method == "POST":
        form = MonitorForm(request.POST)
        if form.is_valid():
            monitor = form.save()
            messages.success(request, f"Monitor “{monitor.name}” created.")
            return redirect(monitor)
    else:
        form = MonitorForm(initial=prefill(request.GET))
    return render(
        request, "alerts/monitor_form.html", {"nav": "monitors", "form": form}
    )


@require(MANAGE_MONITORS)
@require_http_methods(["GET", "HEAD", "POST"])
def monitor_edit(request, pk: int):
    monitor = get_object_or_404(Monitor, pk=pk)
    form = MonitorForm(request.POST or None, instance=monitor)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Monitor “{monitor.name}” saved.")
        return redirect(monitor)
    context = {"nav": "monitors", "form": form, "monitor": monitor}
    return render(request, "alerts/monitor_form.html", context)


@require(MANAGE_MONITORS)
@require_POST
def monitor_toggle(request, pk: int):
    """Enable or disable; a disabled monitor is not checked and never notifies."""
    monitor = get_object_or_404(Monitor, pk=pk)
    Monitor.objects.filter(pk=pk).update(enabled=not monitor.enabled, triggered=False)
    verb = "disabled" if monitor.enabled else "enabled"
    messages.success(request, f"Monitor “{monitor.name}” {verb}.")
    return redirect(monitor)


@require(MANAGE_MONITORS)
@require_http_methods(["GET", "HEAD", "POST"])
def monitor_delete(request, pk: int):
    monitor = get_object_or_404(Monitor, pk=pk)
    if request.method == "POST":
        monitor.delete()
        messages.success(request, f"Monitor “{monitor.name}” deleted.")
        return redirect("monitors")
    context = {"nav": "monitors", "monitor": monitor}
    return render(request, "alerts/monitor_confirm_delete.html", context)


@require(VIEW_MONITORS)
@require_http_methods(["GET", "HEAD"])
def connections(request):
    """Connections, masked, with how many monitors use each."""
    rows = (
        Connection.objects.annotate(monitor_count=Count("monitor"))
        .order_by("name")
        .with_health()
    )
    context = {"nav": "connections", "rows": rows}
    return render(request, "alerts/connections.html", context)


def _connection_form(request, connection: Connection | None):
    form = ConnectionForm(request.POST or None, instance=connection)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        messages.success(request, f"Connection “{saved.name}” saved.")
        return redirect("connections")
    context = {"nav": "connections", "form": form, "connection": connection}
    return render(request, "alerts/connection_form.html", context)


@require(VIEW_MONITORS)
@require_http_methods(["GET", "HEAD"])
def connection_health(request, pk: int):
    """The Health Events panel of one connection (the collectors' fragment)."""
    connection = get_object_or_404(Connection, pk=pk)
    kind = Connection.HEALTH_RESOURCE_TYPE
    events = HealthEvent.objects.open().for_resource(kind, pk).order_by(*PANEL_ORDER)
    context = {
        "resource": connection,
        "kind": kind,
        "events": events,
        "history_query": f"resource_type={kind}",
    }
    return render(request, "collectors/_health_panel.html", context)


@require(MANAGE_MONITORS)
@sensitive_post_parameters("url", "secret")
@require_http_methods(["GET", "HEAD", "POST"])
def connection_add(request):
    return _connection_form(request, None)


@require(MANAGE_MONITORS)
@sensitive_post_parameters("url", "secret")
@require_http_methods(["GET", "HEAD", "POST"])
def connection_edit(request, pk: int):
    return _connection_form(request, get_object_or_404(Connection, pk=pk))


@require(MANAGE_MONITORS)
@require_http_methods(["GET", "HEAD", "POST"])
def connection_delete(request, pk: int):
    connection = get_object_or_404(Connection, pk=pk)
    if request.method == "POST":
        connection.delete()
        messages.success(request, f"Connection “{connection.name}” deleted.")
        return redirect("connections")
    context = {
        "nav": "connections",
        "connection": connection,
        "monitors": list(connection.monitor_set.order_by("name")),
    }
    return render(request, "alerts/connection_confirm_delete.html", context)


@require(MANAGE_MONITORS)
@require_POST
def connection_test(request, pk: int):
    """Send test notification: one attempt now, shown in the log."""
    connection = get_object_or_404(Connection, pk=pk)
    notification = notify.send_test(connection)
    if notification.status == "sent":
        messages.success(request, f"Test notification sent: {notification.last_result}")
    else:
        messages.error(request, f"Test notification failed: {notification.last_result}")
    return redirect("notification-detail", pk=notification.pk)


@require(VIEW_MONITORS)
@require_http_methods(["GET", "HEAD"])
def notifications(request):
    """The Notifications log, newest first, 50 a page."""
    paginator = Paginator(Notification.objects.order_by("-created", "-id"), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    context = {"nav": "notifications", "page": page}
    return render(request, "alerts/notifications.html", context)


@require(VIEW_MONITORS)
@require_http_methods(["GET", "HEAD"])
def notification_detail(request, pk: int):
    """One notification: what was sent, to whom, and every attempt."""
    notification = get_object_or_404(
        Notification.objects.select_related("trigger__monitor"), pk=pk
    )
    context = {
        "nav": "notifications",
        "n": notification,
        "attempts": list(notification.attempt_log.all()),
    }
    return render(request, "alerts/notification_detail.html", context)
