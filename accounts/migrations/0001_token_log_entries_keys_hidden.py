"""The admin's history of API tokens, written before accounts/admin.py, named each token by its key.

DRF's ``Token.__str__`` is the key, and the admin stores that name in every log entry it writes (the
"Recent actions" list, a token's history): staff who may see the log could read keys there. The
entries are renamed as accounts/admin.py names a token now, without the key's last characters (the key
named may still be the one in use); an entry of DRF's ``Token`` model itself, whose id is the key, loses
that id too.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def token_log_entries_keys_hidden(apps: Any, schema_editor: Any) -> None:
    LogEntry = apps.get_model("admin", "LogEntry")
    ContentType = apps.get_model("contenttypes", "ContentType")
    User = apps.get_model("auth", "User")
    types = {ct.model: ct for ct in ContentType.objects.filter(app_label="authtoken")}
    if proxy := types.get("tokenproxy"):
        # A TokenProxy's id is its user's.
        for entry in LogEntry.objects.filter(content_type=proxy):
            username = User.objects.filter(pk=entry.object_id).values_list("username", flat=True).first()
            entry.object_repr = f"API token of {username}" if username else "API token"
            entry.save(update_fields=["object_repr"])
    if token := types.get("token"):
        LogEntry.objects.filter(content_type=token).update(object_repr="API token", object_id=None)


class Migration(migrations.Migration):
    dependencies = [
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("authtoken", "0004_alter_tokenproxy_options"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(token_log_entries_keys_hidden, migrations.RunPython.noop)]
