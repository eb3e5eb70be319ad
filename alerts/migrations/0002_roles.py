# The alerts permissions, given to the roles: View Monitors to Viewer, Analyst
# and Collector manager; Manage Monitors to Collector manager. Idempotent
# (get_or_create on the groups, which collectors' 0003_roles creates too).

from django.db import migrations

PERMISSIONS = {
    "view_monitors": "View Monitors",
    "manage_monitors": "Manage Monitors",
}
ROLES = {
    "Viewer": ["view_monitors"],
    "Analyst": ["view_monitors"],
    "Collector manager": ["view_monitors", "manage_monitors"],
}


def grant(apps, schema_editor):
    """Create the permissions now (post_migrate would be too late for the
    groups) and add them to the roles."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(
        app_label="alerts", model="monitor"
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
        ("alerts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
