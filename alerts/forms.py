"""Forms of the Monitors and Connections pages.

Every rule is checked here with a message on the field; a log monitor's
saved filter is validated by the Messages page's own form, so a monitor can
only hold a filter that page accepts.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import Value
from django.db.models.functions import Lower

from alerts import egress
from alerts.models import (
    Connection,
    ConnectionKind,
    HealthCondition,
    Monitor,
    MonitorKind,
    Scope,
)
from collectors.search import MessageFilterForm, ModelIdsField

MAX_WINDOW_MINUTES = 7 * 24 * 60
MIN_SECRET_LENGTH = 16


class MonitorForm(forms.ModelForm):
    """Add or edit a monitor. The log filter fields are the Messages page's."""

    category = forms.CharField(
        label="Source category",
        required=False,
        max_length=1024,
        help_text="Use * as a wildcard, e.g. Security/*",
    )
    event_type = forms.CharField(label="Event type", required=False, max_length=255)
    risk_level = forms.IntegerField(
        label="Risk level", required=False, min_value=-10, max_value=10
    )
    user_email = forms.CharField(label="User email", required=False, max_length=254)
    q = forms.CharField(label="Text", required=False, max_length=200)
    log_source = forms.TypedChoiceField(
        label="Source", required=False, coerce=int, empty_value=None
    )
    log_collector = forms.TypedChoiceField(
        label="Collector", required=False, coerce=int, empty_value=None
    )

    class Meta:
        model = Monitor
        fields = [
            "name",
            "kind",
            "enabled",
            "condition",
            "scope",
            "collector",
            "sources",
            "warning_minutes",
            "stale_hours",
            "threshold",
            "window_minutes",
            "per_user",
            "connections",
        ]
        labels = {
            "warning_minutes": "N minutes (Warning open longer than)",
            "stale_hours": "N hours (no new message for)",
            "threshold": "More than N messages",
            "window_minutes": "In the last M minutes",
            "per_user": "Per user: any one user with more than N",
        }
        widgets = {"connections": forms.CheckboxSelectMultiple}
        # Ids checked before Django's pk__in lookup (no overflow, no 500).
        field_classes = {"sources": ModelIdsField, "connections": ModelIdsField}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].widget = forms.RadioSelect(choices=MonitorKind.choices)
        self.fields["condition"].required = False
        filters = MessageFilterForm()
        self.fields["log_source"].choices = filters.fields["source"].choices
        self.fields["log_collector"].choices = filters.fields["collector"].choices
        self.fields["sources"].required = False
        self.fields["connections"].required = False
        if self.instance.pk and not self.is_bound:
            query = self.instance.query or {}
            for key in ("category", "event_type", "risk_level", "user_email", "q"):
                self.initial.setdefault(key, query.get(key))
            self.initial.setdefault("log_source", query.get("source"))
            self.initial.setdefault("log_collector", query.get("collector"))

    def clean_window_minutes(self) -> int:
        value = self.cleaned_data["window_minutes"]
        if not 1 <= value <= MAX_WINDOW_MINUTES:
            raise ValidationError(f"Between 1 and {MAX_WINDOW_MINUTES} minutes.")
        return value

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") == MonitorKind.HEALTH:
            self._clean_health(data)
        elif data.get("kind") == MonitorKind.LOG:
            data["query"] = self._clean_query(data)
        return data

    def _clean_health(self, data: dict) -> None:
        if data.get("condition") not in HealthCondition.values:
            self.add_error("condition", "Choose what the monitor watches.")
        if data.get("scope") == Scope.COLLECTOR and not data.get("collector"):
            self.add_error("collector", "Choose the collector whose sources to watch.")
        if data.get("scope") == Scope.SOURCES and not data.get("sources"):
            self.add_error("sources", "Choose at least one source.")
        if data.get("warning_minutes") == 0:
            self.add_error("warning_minutes", "At least 1 minute.")
        if data.get("stale_hours") == 0:
            self.add_error("stale_hours", "At least 1 hour.")

    def _clean_query(self, data: dict) -> dict:
        """The saved Messages filter, validated by the Messages form itself."""
        query = {
            "category": data.get("category") or "",
            "source": data.get("log_source"),
            "collector": data.get("log_collector"),
            "event_type": data.get("event_type") or "",
            "risk_level": data.get("risk_level"),
            "user_email": data.get("user_email") or "",
            "q": data.get("q") or "",
        }
        query = {k: v for k, v in query.items() if v not in ("", None)}
        check = MessageFilterForm({k: str(v) for k, v in query.items()})
        if not check.is_valid():
            names = {"source": "log_source", "collector": "log_collector"}
            for name, errors in check.errors.items():
                field = names.get(name, name)
                for error in errors:
                    self.add_error(field if field in self.fields else None, error)
        return query

    def save(self, commit: bool = True) -> Monitor:
        """Save, keeping only the fields of the monitor's kind; a changed
        monitor starts untriggered (its next check decides afresh)."""
        monitor = super().save(commit=False)
        data = self.cleaned_data
        if monitor.kind == MonitorKind.LOG:
            monitor.query = data.get("query", {})
            monitor.condition = ""
        else:
            monitor.query = {}
        monitor.triggered = False
        if commit:
            monitor.save()
            self.save_m2m()
        return monitor


class ConnectionForm(forms.ModelForm):
    """Add or edit a connection. URL and secret are write-only: a blank
    field on edit keeps the stored value, which is never rendered back."""

    url = forms.CharField(
        label="URL",
        required=False,
        max_length=2048,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    secret = forms.CharField(
        label="Signing secret",
        required=False,
        max_length=512,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=(
            f"At least {MIN_SECRET_LENGTH} characters, shared with the receiver "
            '(e.g. python -c "import secrets; print(secrets.token_hex(32))").'
        ),
    )

    class Meta:
        model = Connection
        fields = ["name", "kind", "recipients"]
        widgets = {"recipients": forms.TextInput}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.url_encrypted:
            self.fields[
                "url"
            ].help_text = f"Stored: {self.instance.url_hint}. Leave blank to keep it."
        else:
            self.fields["url"].help_text = (
                "https:// only; Slack and Teams give you this URL when you add "
                "an incoming webhook."
            )
        if self.instance.secret_encrypted:
            self.fields["secret"].help_text = "Stored. Leave blank to keep it."

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        same = Connection.objects.alias(lname=Lower("name")).filter(
            lname=Lower(Value(name))
        )
        if same.exclude(pk=self.instance.pk).exists():
            raise ValidationError("A connection with this name already exists.")
        return name

    def clean(self) -> dict:
        data = super().clean()
        kind = data.get("kind")
        if kind == ConnectionKind.EMAIL:
            data["recipients"] = self._clean_recipients(data.get("recipients", ""))
        elif kind:
            self._clean_url(data)
            if kind == ConnectionKind.WEBHOOK:
                self._clean_secret(data)
        return data

    def _clean_recipients(self, value: str) -> str:
        addresses = [a.strip() for a in value.split(",") if a.strip()]
        if not addresses:
            self.add_error("recipients", "Enter at least one email address.")
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                self.add_error("recipients", f"“{address}” is not an email address.")
        return ", ".join(addresses)

    def _clean_url(self, data: dict) -> None:
        url = (data.get("url") or "").strip()
        if not url:
            if not self.instance.url_encrypted:
                self.add_error("url", "Enter the destination URL.")
            return
        try:
            egress.check_destination(url)
        except egress.EgressRefused as exc:
            self.add_error("url", str(exc))
        data["url"] = url

    def _clean_secret(self, data: dict) -> None:
        secret = data.get("secret") or ""
        if not secret and self.instance.secret_encrypted:
            return
        if len(secret) < MIN_SECRET_LENGTH:
            self.add_error(
                "secret", f"Enter a secret of at least {MIN_SECRET_LENGTH} characters."
            )
        elif not secret.isprintable() or not secret.isascii():
            self.add_error("secret", "Use printable ASCII characters only.")

    def save(self, commit: bool = True) -> Connection:
        connection = super().save(commit=False)
        data = self.cleaned_data
        if connection.kind == ConnectionKind.EMAIL:
            connection.url_encrypted = connection.url_hint = ""
            connection.secret_encrypted = ""
        else:
            connection.recipients = ""
            if data.get("url"):
                connection.set_url(data["url"])
            if connection.kind == ConnectionKind.WEBHOOK and data.get("secret"):
                connection.set_secret(data["secret"])
            elif connection.kind != ConnectionKind.WEBHOOK:
                connection.secret_encrypted = ""
        if commit:
            connection.save()
        return connection
