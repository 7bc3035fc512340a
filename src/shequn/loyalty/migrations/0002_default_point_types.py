"""Workspaces created before the loyalty app get the same two point types as new ones."""

from django.db import migrations

DEFAULTS = [
    {"code": "points", "name": "积分", "kind": "currency", "expiry_policy": "year_end", "expiry_period": 1},
    {"code": "growth", "name": "成长值", "kind": "contribution", "expiry_policy": "never", "expiry_period": 0},
]


def add_defaults(apps, schema_editor):
    Workspace = apps.get_model("core", "Workspace")
    PointType = apps.get_model("loyalty", "PointType")
    have = set(PointType.objects.values_list("workspace_id", flat=True).distinct())
    PointType.objects.bulk_create([PointType(workspace_id=ws_id, **spec)
                                   for ws_id in Workspace.objects.exclude(pk__in=have).values_list("pk", flat=True)
                                   for spec in DEFAULTS])


class Migration(migrations.Migration):

    dependencies = [
        ("loyalty", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(add_defaults, migrations.RunPython.noop),
    ]
