"""The output form: destination, secrets, filter and batching.

The URL and token are write-only: password inputs, blank on edit keeps the
stored (encrypted) value, and only masked hints are ever rendered. The URL
is checked for its form here (https://, or http:// where the operator allows
private destinations); the address rules are checked again by
`alerts.egress` on every request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.db.models import Max, Value
from django.db.models.functions import Lower

from collectors.models import LogMessage, Source
from collectors.search import FastSelect
from outputs import formats
from outputs.models import Output, OutputFormat

MAX_URL_LENGTH = 2048
MAX_TOKEN_LENGTH = 4096
MAX_BATCH_COUNT = 10_000
MAX_BATCH_BYTES = 10_000_000
MIN_BATCH_BYTES = 1_000


def _source_choices() -> list[tuple[str, str]]:
    """Every source as "collector / source", from one narrow query."""
    rows = Source.objects.order_by("collector__name", "name").values_list(
        "pk", "collector__name", "name"
    )
    return [("", "All sources")] + [(str(pk), f"{c} / {n}") for pk, c, n in rows]


def _check_url(url: str) -> str:
    """A well-formed https:// URL with a host and no user:password part."""
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise forms.ValidationError("The URL may not contain spaces or controls.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise forms.ValidationError("This is not a valid URL.") from None
    allowed = ("https", "http") if settings.EGRESS_ALLOW_PRIVATE else ("https",)
    if parts.scheme.lower() not in allowed or not parts.hostname:
        raise forms.ValidationError("The URL must start with https:// and name a host.")
    if parts.username or parts.password:
        raise forms.ValidationError(
            "Put credentials in the Token field, not in the URL."
        )
    return url


class OutputForm(forms.ModelForm):
    """Add or edit an output."""

    url = forms.CharField(
        label="URL",
        max_length=MAX_URL_LENGTH,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=(
            "Sumo: the HTTP Logs Source's URL. Splunk: https://host:8088/services/"
            "collector/event. Stored encrypted; shown masked."
        ),
    )
    token = forms.CharField(
        label="Token",
        max_length=MAX_TOKEN_LENGTH,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=(
            "Splunk HEC token (sent as Authorization: Splunk <token>), or an "
            "optional bearer token for an NDJSON webhook. Not used by Sumo."
        ),
    )
    source = forms.TypedChoiceField(
        label="Source",
        required=False,
        coerce=int,
        empty_value=None,
        widget=FastSelect,
    )
    max_batch_count = forms.IntegerField(
        label="Batch size (messages)",
        min_value=1,
        max_value=MAX_BATCH_COUNT,
        initial=1000,
    )
    max_batch_bytes = forms.IntegerField(
        label="Batch size (bytes before compression)",
        min_value=MIN_BATCH_BYTES,
        max_value=MAX_BATCH_BYTES,
        initial=formats.SUMO_MAX_BYTES,
        help_text="Sumo accepts at most 1,000,000 bytes a request.",
    )
    start_from = forms.ChoiceField(
        label="Start from",
        choices=[
            ("all", "Every stored message"),
            ("new", "Messages collected from now on"),
        ],
        initial="all",
        required=False,
    )

    class Meta:
        model = Output
        fields = [
            "name",
            "format",
            "category_pattern",
            "sumo_host",
            "hec_sourcetype",
            "hec_index",
            "compress",
            "max_batch_count",
            "max_batch_bytes",
        ]
        labels = {
            "category_pattern": "Source category",
            "compress": "Compress (gzip)",
        }
        help_texts = {
            "category_pattern": "Forward only these categories; * is a "
            "wildcard, e.g. Security/*. Blank forwards every category.",
            "sumo_host": "Sent as X-Sumo-Host (Sumo) and host (Splunk). Blank: "
            "this machine's host name.",
            "compress": "Sumo requests are always compressed.",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.adding = self.instance.pk is None
        self.fields["source"].choices = _source_choices()
        if not self.adding:
            self.initial["source"] = self.instance.source_id
            del self.fields["start_from"]
            keep = "(leave blank to keep it)"
            self.fields["url"].help_text = f"Stored: {self.instance.url_hint} {keep}."
            if self.instance.token_hint:
                hint = self.instance.token_hint
                self.fields["token"].help_text = f"Stored: {hint} {keep}."
        # Splunk only, so not required of every format: clean() asks for it.
        self.fields["hec_sourcetype"].required = False

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name.isprintable():
            raise forms.ValidationError("The name may not contain control characters.")
        taken = (
            Output.objects.alias(lname=Lower("name"))
            .filter(lname=Lower(Value(name)))
            .exclude(pk=self.instance.pk)
        )
        if taken.exists():
            raise forms.ValidationError("An output with this name already exists.")
        return name

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        if not url:
            if self.adding:
                raise forms.ValidationError("Enter the endpoint's URL.")
            return ""
        return _check_url(url)

    def clean_category_pattern(self) -> str:
        pattern = self.cleaned_data["category_pattern"].strip()
        if pattern and not pattern.isprintable():
            raise forms.ValidationError(
                "The pattern may not contain control characters."
            )
        return pattern

    def clean_source(self) -> int | None:
        pk = self.cleaned_data["source"]
        if pk is not None and not Source.objects.filter(pk=pk).exists():
            raise forms.ValidationError("That source no longer exists.")
        return pk

    def clean(self) -> dict:
        data = super().clean()
        fmt = data.get("format")
        has_token = bool(data.get("token")) or (
            not self.adding and bool(self.instance.token_encrypted)
        )
        if fmt == OutputFormat.HEC and not has_token:
            self.add_error("token", "Splunk HEC needs a token.")
        if fmt == OutputFormat.HEC and not data.get("hec_sourcetype"):
            self.add_error("hec_sourcetype", "Splunk HEC needs a sourcetype.")
        size = data.get("max_batch_bytes")
        if fmt == OutputFormat.SUMO and size and size > formats.SUMO_MAX_BYTES:
            self.add_error(
                "max_batch_bytes",
                f"Sumo accepts at most {formats.SUMO_MAX_BYTES:,} bytes a request.",
            )
        return data

    def save(self, commit: bool = True) -> Output:
        """Encrypt the secrets given, keep the stored ones otherwise, and set
        the filter and the starting checkpoint (only when adding)."""
        output = super().save(commit=False)
        data = self.cleaned_data
        if data.get("url"):
            output.set_url(data["url"])
        if data.get("token"):
            output.set_token(data["token"])
        if output.format == OutputFormat.SUMO:
            output.set_token("")  # Sumo authenticates by the URL alone.
        source_id = data.get("source")
        output.source_id = source_id
        output.source_label = (
            dict(self.fields["source"].choices).get(str(source_id), "")
            if source_id
            else ""
        )
        if self.adding and data.get("start_from") == "new":
            output.checkpoint = LogMessage.objects.aggregate(top=Max("pk"))["top"] or 0
        if commit:
            output.save()
        return output
