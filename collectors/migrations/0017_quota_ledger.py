"""The quota ledger: one ApiKeyUsage row per (API, key), and a quota window
(opened, resets, used) instead of a calendar day's counter, so the rolling
24 hours of the Reporting API fit the same row as the User Event API's day."""

from datetime import UTC, datetime, time, timedelta

from django.db import migrations, models


def day_to_window(apps, schema_editor):
    """A row counted on `day` becomes the window of that UTC day."""
    usage = apps.get_model("collectors", "ApiKeyUsage")
    for row in usage.objects.exclude(day=None):
        opened = datetime.combine(row.day, time.min, tzinfo=UTC)
        row.window_opened_at = opened
        row.window_resets_at = opened + timedelta(days=1)
        row.save(update_fields=["window_opened_at", "window_resets_at"])


class Migration(migrations.Migration):
    dependencies = [
        ("collectors", "0016_quarantine_data_type"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikeyusage",
            name="api",
            field=models.CharField(
                choices=[("events", "User Event API"), ("reporting", "Reporting API")],
                default="events",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="apikeyusage",
            name="key_hash",
            field=models.CharField(max_length=64),
        ),
        migrations.AddConstraint(
            model_name="apikeyusage",
            constraint=models.UniqueConstraint(
                fields=("api", "key_hash"), name="apikeyusage_one_row_per_key"
            ),
        ),
        migrations.RenameField(
            model_name="apikeyusage", old_name="requests_today", new_name="used"
        ),
        migrations.AddField(
            model_name="apikeyusage",
            name="window_opened_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="apikeyusage",
            name="window_resets_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(day_to_window, migrations.RunPython.noop),
        migrations.RemoveField(model_name="apikeyusage", name="day"),
    ]
