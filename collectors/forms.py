"""Forms of the configuration screens: hosted collectors, KnowBe4 sources and
the Fields table schema.

Every rule of the seed's form is enforced here (not only in the browser), with
a message on the field that broke it; saving happens in one transaction.
"""

from __future__ import annotations

import copy

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.functions import Lower

from collectors import baseurls, fieldnames, names
from collectors.choices import MAX_FIELDS_PER_SOURCE, MAX_SCHEMA_FIELDS
from collectors.knowbe4 import records
from collectors.models import FieldDefinition, HostedCollector, Source, SourceField

MIN_API_KEY_LENGTH = 8
# The non-field error that only says "a Fields row is wrong"; never displayed.
ROWS_POINTER = "Check the Fields rows."
MAX_API_KEY_LENGTH = 4096


def _same_name(queryset, name: str):
    """Rows whose `name` is the same name as `name`: equal once both are
    NFKC-normalised and case-folded (`names.name_key`).

    The database's unique constraints, on Lower("name"), also catch a lost
    race between two saves of names equal but for case.
    """
    rows = queryset.values_list("pk", "name")
    return queryset.filter(pk__in=names.same_name_ids(rows, name))


def _readable(name: str) -> str:
    """The app's name rules (`names.validate_display_name`)."""
    names.validate_display_name(name)
    return name


class CollectorForm(forms.ModelForm):
    """Add or edit a hosted collector."""

    class Meta:
        model = HostedCollector
        fields = ["name", "description", "category"]
        labels = {"category": "Category"}
        help_texts = {
            "category": "Default source category for data from this collector.",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def clean_name(self) -> str:
        name = _readable(self.cleaned_data["name"])
        others = HostedCollector.objects.exclude(pk=self.instance.pk)
        if _same_name(others, name).exists():
            raise ValidationError(
                f"A hosted collector named “{name}” already exists.", code="unique"
            )
        return name


class FieldRow:
    """One key/value row of the Fields section, with its own messages."""

    def __init__(self, key: str, value: str) -> None:
        self.key = key
        self.value = value
        self.key_error: str | None = None
        self.value_error: str | None = None
        self.in_schema = False

    @property
    def is_blank(self) -> bool:
        return not self.key and not self.value


class SourceForm(forms.ModelForm):
    """The KnowBe4 API source form, in the seed's order.

    Field rows arrive as parallel `field_key` / `field_value` lists (the
    "+Add Field" link adds a pair without a reload) and are checked here, each
    row carrying its own message.
    """

    base_url_key = forms.ChoiceField(label="Base URL")
    api_key = forms.CharField(
        label="API Key",
        required=False,
        widget=forms.PasswordInput(
            render_value=False,
            attrs={"autocomplete": "new-password", "spellcheck": "false"},
        ),
    )
    auto_add_fields = forms.BooleanField(
        required=False,
        label="Automatically add nonexistent fields to the Fields table schema",
    )
    initial_lookback_days = forms.IntegerField(
        label="Initial look-back (days)",
        min_value=1,
        max_value=90,
        initial=7,
        help_text="How many past days the first collection reads (1 to 90).",
    )
    rescan_days = forms.IntegerField(
        label="Re-scan window (days)",
        min_value=0,
        max_value=14,
        initial=1,
        help_text="Recent days read again to catch late events (0 to 14).",
    )

    today_poll_minutes = forms.IntegerField(
        label="Poll interval (minutes)",
        min_value=5,
        max_value=24 * 60,
        required=False,
        initial=Source._meta.get_field("today_poll_minutes").default,
        help_text=(
            "How often today's events are read when the option above is on "
            "(5 to 1,440). Widened on its own when the daily quota runs low."
        ),
    )

    class Meta:
        model = Source
        fields = [
            "name",
            "description",
            "category",
            "base_url_key",
            "initial_lookback_days",
            "rescan_days",
            "rescan_interval_minutes",
            "collect_today",
            "today_poll_minutes",
            "licensed_users",
        ]
        labels = {
            "name": "Name",
            "category": "Source Category",
            "rescan_interval_minutes": "Re-scan interval (minutes)",
            "collect_today": "Collect today's events as they arrive",
            "licensed_users": "Licensed users",
        }
        help_texts = {
            "rescan_interval_minutes": (
                "How often the re-scan window is read again, not only when a day "
                "closes (at least 15; blank: every 6 hours)."
            ),
            "collect_today": (
                "Off: events are collected up to the previous UTC day, as KnowBe4's "
                "day filter allows. On: the current day is also read at the poll "
                "interval; the closed day is still read in full once it settles."
            ),
            "licensed_users": (
                "KnowBe4 allows 10 requests per licensed user per day, shared by "
                "every source using the API key. Blank: the budget is learned from "
                "the first Limit Exceeded."
            ),
            "name": "Displayed for the Source in the web application.",
            "category": (
                "Any string to tag the output collected from this Source. It is "
                "stored in a searchable field called _sourceCategory."
            ),
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, collector: HostedCollector, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.collector = collector
        self.instance.collector = collector
        self.adding = self.instance.pk is None
        # The stored Base URL, before the bound form writes the new one in.
        self.instance_base_url_key = self.instance.base_url_key
        self.fields["base_url_key"].choices = [("", "Select…"), *baseurls.choices()]
        self.fields["description"].label = "Description"
        if self.adding:
            # Checked in clean_api_key (with its own message); marked required.
            self.fields["api_key"].shown_required = True
            self.fields["api_key"].help_text = (
                "Your secret KnowBe4 User Event API key (from the User Event API "
                "Management Console)."
            )
        else:
            self.fields["api_key"].help_text = (
                "Leave blank to keep the current key (ending in "
                f"…{self.instance.api_key_hint}). Changing the Base URL requires "
                "entering the key again."
            )
        self.schema = {
            name.lower(): name
            for name in FieldDefinition.objects.filter(enabled=True).values_list(
                "name", flat=True
            )
        }
        self.rows = self._initial_rows()
        self.fields_error: str | None = None

    def _initial_rows(self) -> list[FieldRow]:
        """Rows from the POST when bound, else from the stored source."""
        if self.is_bound:
            keys = (
                self.data.getlist("field_key") if hasattr(self.data, "getlist") else []
            )
            values = (
                self.data.getlist("field_value")
                if hasattr(self.data, "getlist")
                else []
            )
            values = values + [""] * (len(keys) - len(values))
            keys = keys + [""] * (len(values) - len(keys))
            rows = [
                FieldRow(k.strip(), v.strip())
                for k, v in zip(keys, values, strict=True)
            ]
            rows = [row for row in rows if not row.is_blank]
        elif not self.adding:
            rows = [FieldRow(f.key, f.value) for f in self.instance.fields.all()]
        else:
            rows = []
        for row in rows:
            row.in_schema = row.key.lower() in self.schema
        return rows

    @property
    def key_rules(self) -> dict:
        """The field-name rules, for the check while typing."""
        return fieldnames.client_rules()

    @property
    def schema_names(self) -> list[str]:
        """Enabled schema names, for the live check next to each key."""
        return sorted(self.schema.values(), key=str.lower)

    @property
    def missing_keys(self) -> list[str]:
        """Valid keys of this form that the enabled schema does not hold."""
        return [r.key for r in self.rows if not r.key_error and not r.in_schema]

    def other_errors(self) -> list[str]:
        """Non-field errors other than the Fields pointer (shown on top)."""
        return [e for e in self.non_field_errors() if e != ROWS_POINTER]

    def error_summary(self) -> list[tuple[str, str]]:
        """(label, element id) of everything to fix, in the form's order, for
        the summary on top: it links to each problem and repeats no message."""
        items: list[tuple[str, str]] = []
        for name in self.fields:
            bound = self[name]
            if name == "base_url_key":  # the Fields section comes before it
                items += self._row_summary()
            if bound.errors:
                items.append((str(bound.label), bound.id_for_label))
        return items

    def _row_summary(self) -> list[tuple[str, str]]:
        items = [
            (f"Fields, row {n}", f"field-key-{n}")
            for n, row in enumerate(self.rows, 1)
            if row.key_error or row.value_error
        ]
        if self.fields_error:
            items.append(("Fields", "add-field"))
        return items

    @property
    def api_key_reentry(self) -> str:
        """Why the API key box is empty after a failed Save, if a key was typed:
        a secret is never sent back to the browser."""
        typed = self.is_bound and str(self.data.get("api_key", "")).strip()
        if not typed or not self.errors:
            return ""
        if self.adding:
            return (
                "Enter the API key again: for safety, the key you typed is never "
                "sent back to your browser, and this Save did not go through."
            )
        return (
            "Enter the new API key again, or leave the box blank to keep the "
            f"current key (ending in …{self.instance.api_key_hint}): for safety, "
            "a key you typed is never sent back to your browser."
        )

    @property
    def changes_credentials(self) -> bool:
        """Whether this valid edit gives the source a new API key or Base URL:
        it must then authenticate again (see `Source.reconfigured`)."""
        return not self.adding and (
            bool(self.cleaned_data.get("api_key"))
            or self.cleaned_data.get("base_url_key") != self.instance_base_url_key
        )

    def clean_name(self) -> str:
        name = _readable(self.cleaned_data["name"])
        others = Source.objects.filter(collector=self.collector).exclude(
            pk=self.instance.pk
        )
        if _same_name(others, name).exists():
            raise ValidationError(
                f"This collector already has a source named “{name}”.",
                code="unique",
            )
        return name

    def clean_today_poll_minutes(self) -> int:
        """Blank (or absent) keeps the default interval."""
        value = self.cleaned_data.get("today_poll_minutes")
        if value is None:
            return Source._meta.get_field("today_poll_minutes").default
        return value

    def clean_api_key(self) -> str:
        key = self.cleaned_data["api_key"].strip()
        if not key:
            if self.adding:
                raise ValidationError("Enter the API key.", code="required")
            return ""
        return check_api_key(key)

    def clean(self) -> dict:
        cleaned = super().clean()
        self._check_key_follows_base_url(cleaned)
        self._check_rows()
        if self.fields_error or any(r.key_error or r.value_error for r in self.rows):
            # Makes the form invalid; the message itself is shown once, on the
            # row (or under Fields), and the error summary links to it.
            self.add_error(None, ValidationError(ROWS_POINTER, code="fields"))
        elif cleaned.get("auto_add_fields"):
            self._check_capacity()
        return cleaned

    def _check_key_follows_base_url(self, cleaned: dict) -> None:
        """A new Base URL needs the key typed again: otherwise whoever may edit
        a source could send its stored key to another host they control."""
        new_url = cleaned.get("base_url_key")
        if (
            not self.adding
            and new_url
            and new_url != self.instance_base_url_key
            and not cleaned.get("api_key")
            and "api_key" not in self.errors
        ):
            self.add_error(
                "api_key",
                ValidationError(
                    "Enter the API key again: the Base URL changed, and the stored "
                    "key is only ever sent to the Base URL it was entered for.",
                    code="key_required_for_new_base_url",
                ),
            )

    def _check_rows(self) -> None:
        """Each row's naming rules, duplicates, and the 10-field limit."""
        if len(self.rows) > MAX_FIELDS_PER_SOURCE:
            self.fields_error = (
                f"A source has at most {MAX_FIELDS_PER_SOURCE} fields; "
                f"{len(self.rows)} were given."
            )
        seen: set[str] = set()
        for row in self.rows:
            row.key_error = fieldnames.key_error(row.key)
            row.value_error = fieldnames.value_error(row.value)
            if not row.key_error and row.key.lower() in seen:
                row.key_error = f"The field “{row.key}” is given twice."
            seen.add(row.key.lower())

    def _check_capacity(self) -> None:
        """Auto-adding may not push the schema past its 200 fields."""
        missing = {k.lower() for k in self.missing_keys}
        if not missing:
            return
        existing = {
            n.lower() for n in FieldDefinition.objects.values_list("name", flat=True)
        }
        new = missing - existing
        if len(existing) + len(new) > MAX_SCHEMA_FIELDS:
            self.add_error(
                "auto_add_fields",
                f"The Fields table schema is limited to {MAX_SCHEMA_FIELDS} fields "
                f"and holds {len(existing)}; adding {len(new)} more would exceed it. "
                "Remove fields on the Fields page or untick this option.",
            )

    def save(self, commit: bool = True) -> Source:
        """Store the source, its fields and any schema additions atomically."""
        source = super().save(commit=False)
        if self.cleaned_data.get("api_key"):
            source.set_api_key(self.cleaned_data["api_key"])
        with transaction.atomic():
            source.save()
            source.fields.all().delete()
            SourceField.objects.bulk_create(
                SourceField(source=source, key=r.key, value=r.value) for r in self.rows
            )
            if self.cleaned_data.get("auto_add_fields"):
                add_to_schema(self.missing_keys)
        return source


def check_api_key(key: str) -> str:
    """The API key rules of the source form (and of Test connection)."""
    if any(ch.isspace() for ch in key):
        raise ValidationError(
            "The API key may not contain spaces or line breaks.", code="invalid"
        )
    if not (key.isascii() and key.isprintable()):
        raise ValidationError(
            "The API key may only contain letters, digits and punctuation "
            "(printable ASCII): check that it was pasted whole.",
            code="invalid",
        )
    if len(key) < MIN_API_KEY_LENGTH:
        raise ValidationError(
            f"The API key has at least {MIN_API_KEY_LENGTH} characters.",
            code="min_length",
        )
    if len(key) > MAX_API_KEY_LENGTH:
        raise ValidationError(
            f"The API key has at most {MAX_API_KEY_LENGTH} characters.",
            code="max_length",
        )
    return key


class ConnectionTestForm(forms.Form):
    """Test connection: the Base URL and key typed on the source form, or on
    an edit a blank key (the stored one, for its own Base URL only)."""

    base_url_key = forms.ChoiceField(label="Base URL")
    api_key = forms.CharField(required=False, max_length=MAX_API_KEY_LENGTH)
    # A stored key is tested only with the form of its own kind of source.
    source = forms.ModelChoiceField(
        queryset=Source.objects.filter(kind="events"),
        required=False,
        widget=forms.HiddenInput,
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["base_url_key"].choices = baseurls.choices()
        self.fields["base_url_key"].error_messages["required"] = (
            "Choose a Base URL first."
        )

    def clean_api_key(self) -> str:
        key = self.cleaned_data["api_key"].strip()
        return check_api_key(key) if key else ""

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        source = cleaned.get("source")
        if not cleaned.get("api_key"):
            if source is None:
                raise ValidationError("Enter the API key first.", code="required")
            if source.base_url_key != cleaned["base_url_key"]:
                raise ValidationError(
                    "Enter the API key again: the stored key is only ever sent to "
                    f"the {self.fields['base_url_key'].label} it was entered for.",
                    code="key_required_for_new_base_url",
                )
        return cleaned

    def target(self) -> tuple[str, str]:
        """(Base URL, key) to test; may raise crypto.KeyUnreadable."""
        cleaned = self.cleaned_data
        key = cleaned["api_key"] or cleaned["source"].get_api_key()
        return baseurls.get(cleaned["base_url_key"]).url, key


class ReportingConnectionTestForm(ConnectionTestForm):
    """Test connection of the KMSAT Reporting form: a Region of the Reporting
    form's list and the typed Reporting key, or on an edit a blank key (that
    Reporting source's stored key, for its own Region only)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        region = self.fields["base_url_key"]
        region.label = "Region"
        region.choices = baseurls.reporting_choices()
        region.error_messages["required"] = "Choose a Region first."
        self.fields["source"].queryset = Source.objects.filter(kind="reporting")


def add_to_schema(keys: list[str]) -> None:
    """Enable existing (disabled) definitions of `keys` and create the others."""
    lowered = {k.lower(): k for k in keys}
    if not lowered:
        return
    existing = FieldDefinition.objects.alias(lname=Lower("name")).filter(
        lname__in=list(lowered)
    )
    found = {d.name.lower() for d in existing}
    existing.filter(enabled=False).update(enabled=True)
    FieldDefinition.objects.bulk_create(
        FieldDefinition(name=name) for low, name in lowered.items() if low not in found
    )


class FieldDefinitionForm(forms.ModelForm):
    """Add a field to the Fields table schema (same naming rules as sources)."""

    class Meta:
        model = FieldDefinition
        fields = ["name"]
        labels = {"name": "Field name"}

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        fieldnames.validate_field_key(name)
        if _same_name(FieldDefinition.objects.all(), name).exists():
            raise ValidationError(
                f"The field “{name}” is already in the schema.", code="unique"
            )
        if FieldDefinition.objects.count() >= MAX_SCHEMA_FIELDS:
            raise ValidationError(
                f"The Fields table schema is full ({MAX_SCHEMA_FIELDS} fields). "
                "Delete a field before adding another.",
                code="capacity",
            )
        return name


class ReportingSourceForm(SourceForm):
    """The KnowBe4 KMSAT Reporting source form: the events form's Name,
    Description, Source Category and Fields, then Region, API Key (the
    Reporting key), Data types, Poll interval and, in Advanced, Licensed users
    and how long a closed test's recipients are re-read. The settings go to
    `Source.reporting` (read by `engine/snapshots.py`)."""

    is_reporting = True
    # The events stream's settings do not apply to snapshots.
    initial_lookback_days = None
    rescan_days = None
    today_poll_minutes = None
    data_types = forms.MultipleChoiceField(
        label="Data types",
        choices=records.DATA_TYPE_CHOICES,
        initial=records.DEFAULT_DATA_TYPES,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Select at least one data type."},
    )
    poll_hours = forms.IntegerField(
        label="Poll interval (hours)",
        min_value=1,
        max_value=24,
        initial=records.DEFAULT_POLL_HOURS,
        help_text="How often every selected data type is read whole (1 to 24).",
    )
    reporting_licensed_users = forms.IntegerField(
        label="Licensed users",
        min_value=0,
        max_value=10_000_000,
        required=False,
        help_text=(
            "KnowBe4 allows 2,000 requests plus the licensed users per 24 hours "
            "from the first request. Blank: 2,000."
        ),
    )
    recipients_days = forms.IntegerField(
        label="Re-read recipients after a test closes (days)",
        min_value=0,
        max_value=90,
        initial=records.DEFAULT_RECIPIENTS_DAYS,
        help_text="Recipients of older closed tests are not read again (0 to 90).",
    )

    class Meta(SourceForm.Meta):
        fields = ["name", "description", "category", "base_url_key"]
        labels = {**SourceForm.Meta.labels, "base_url_key": "Region"}

    def __init__(self, *args, collector: HostedCollector, **kwargs) -> None:
        super().__init__(*args, collector=collector, **kwargs)
        self.instance.kind = "reporting"  # the quota figures plan a Reporting key
        region = self.fields["base_url_key"]
        region.label = "Region"
        region.choices = [("", "Select…"), *baseurls.reporting_choices()]
        if self.adding:
            self.fields["api_key"].help_text = (
                "Your KnowBe4 Reporting API key, not the User Event API key: in "
                "the KnowBe4 console, Account Settings › Account Integrations › "
                "API › Reporting API (Platinum and Diamond plans)."
            )
        else:
            conf = self.instance.reporting or {}
            self.initial.update(
                data_types=conf.get("data_types") or records.DEFAULT_DATA_TYPES,
                poll_hours=conf.get("poll_hours") or records.DEFAULT_POLL_HOURS,
                reporting_licensed_users=conf.get("licensed_users"),
                recipients_days=conf.get(
                    "recipients_days", records.DEFAULT_RECIPIENTS_DAYS
                ),
            )

    def save(self, commit: bool = True) -> Source:
        """The events form's save, with the kind and the Reporting settings."""
        self.instance.kind = "reporting"
        data = self.cleaned_data
        self.instance.reporting = {
            "data_types": [
                k for k, _ in records.DATA_TYPE_CHOICES if k in data["data_types"]
            ],
            "poll_hours": data["poll_hours"],
            "licensed_users": data.get("reporting_licensed_users") or 0,
            "recipients_days": data["recipients_days"],
        }
        return super().save(commit)


class QuotaFiguresForm(forms.Form):
    """The settings the quota figures depend on, as typed in a source form's
    Advanced section (the live figures): the source form's own fields, with
    their rules and messages, applied to a copy of the source that is never
    saved. Nothing else of the form is read (never the API key)."""

    EVENTS = (
        "rescan_days",
        "rescan_interval_minutes",
        "collect_today",
        "today_poll_minutes",
        "licensed_users",
    )
    REPORTING = ("data_types", "poll_hours", "reporting_licensed_users")

    def __init__(self, data, *, reporting: bool) -> None:
        form = ReportingSourceForm if reporting else SourceForm
        names = self.REPORTING if reporting else self.EVENTS
        if not any(name in data for name in names):
            # None of the values: the figures of a fresh form (its defaults).
            data = {
                name: form.base_fields[name].initial
                for name in names
                if form.base_fields[name].initial is not None
            }
        super().__init__(data)
        self.reporting = reporting
        model_fields = {f.name: f for f in Source._meta.get_fields()}
        for name in names:
            field = self.fields[name] = copy.deepcopy(form.base_fields[name])
            if name in form._meta.fields:  # the model's rules, checked on Save
                extra = model_fields[name].validators
                field.validators += [v for v in extra if v not in field.validators]

    def messages(self) -> list[str]:
        """'Label: message' for each field that breaks its rule."""
        return [
            f"{self.fields[name].label}: {' '.join(errors)}"
            for name, errors in self.errors.items()
        ]

    def applied_to(self, source: Source) -> Source:
        """`source` (unsaved or stored) with the typed values, for figures."""
        data = self.cleaned_data
        if self.reporting:
            source.kind = "reporting"
            source.reporting = {
                **(source.reporting or {}),
                "data_types": list(data["data_types"]),
                "poll_hours": data["poll_hours"],
                "licensed_users": data.get("reporting_licensed_users") or 0,
            }
            return source
        source.rescan_days = data["rescan_days"]
        source.rescan_interval_minutes = data.get("rescan_interval_minutes")
        source.collect_today = bool(data.get("collect_today"))
        poll = data.get("today_poll_minutes")
        source.today_poll_minutes = (
            poll or Source._meta.get_field("today_poll_minutes").default
        )
        source.licensed_users = data.get("licensed_users")
        return source
