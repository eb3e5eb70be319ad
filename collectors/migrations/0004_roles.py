# The app's permissions (on HostedCollector's Meta) and the three roles
# made of them. Idempotent (get_or_create): other apps' migrations add their own
# permissions to the same groups.

from django.db import migrations, models

PERMISSIONS = {
    "view_collectors": "View Collectors",
    "download_search_results": "Download Search Results",
    "manage_collectors": "Manage Collectors",
    "manage_fields": "Manage Fields",
}
ROLES = {
    "Viewer": ["view_collectors"],
    "Analyst": ["view_collectors", "download_search_results"],
    "Collector manager": [
        "view_collectors",
        "download_search_results",
        "manage_collectors",
        "manage_fields",
    ],
}


def create_roles(apps, schema_editor):
    """Create the permissions now (post_migrate would be too late for the
    groups) and give each role its permissions."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(
        app_label="collectors", model="hostedcollector"
    )
    perms = {}
    for codename, name in PERMISSIONS.items():
        perms[codename], _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
    for role, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*(perms[c] for c in codenames))


class Migration(migrations.Migration):

    dependencies = [
        ("collectors", "0003_history_names"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="hostedcollector",
            options={
                "ordering": ["name"],
                "permissions": [
                    ("view_collectors", "View Collectors"),
                    ("download_search_results", "Download Search Results"),
                    ("manage_collectors", "Manage Collectors"),
                    ("manage_fields", "Manage Fields"),
                ],
            },
        ),
        migrations.RunPython(create_roles, migrations.RunPython.noop),
    ]
