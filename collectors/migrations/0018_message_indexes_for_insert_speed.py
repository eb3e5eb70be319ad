"""Fewer B-trees to update per stored message (issue 9, the benchmark).

- The source foreign key's own index goes: the unique constraint and
  `msg_source_time` both start with `source_id`, so it served no query.
  Dropped by name rather than by AlterField, which on SQLite would copy the
  whole table to drop one index.
- `msg_overview` is led by the data type, so it also serves what
  `msg_data_type_time` did (the Messages data-type filter, the Overview's
  Reporting panels), and the Overview's user-event panels (which read
  `data_type = 'events'` only) keep a covering index.
"""

import django.db.models.deletion
from django.db import migrations, models

# Django's name for the index of collectors_logmessage.source_id (the same on
# SQLite and PostgreSQL).
FK_INDEX = "collectors_logmessage_source_id_29514c61"


class Migration(migrations.Migration):
    dependencies = [
        ("collectors", "0017_quota_ledger"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="logmessage", name="msg_overview"),
        migrations.RemoveIndex(model_name="logmessage", name="msg_data_type_time"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="logmessage",
                    name="source",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="messages",
                        to="collectors.source",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{FK_INDEX}"',
                    reverse_sql=migrations.RunSQL.noop,
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="logmessage",
            index=models.Index(
                fields=[
                    "data_type",
                    "message_time",
                    "event_type",
                    "risk_level",
                    "user_email",
                    "source",
                    "source_category",
                ],
                name="msg_overview",
            ),
        ),
    ]
