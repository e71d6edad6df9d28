"""Writes on personas. Every interface (admin, commands, importers) changes personas through here."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import F, QuerySet

from personas.models import PersonaConfig

EDITORS_GROUP = "Editors"


def editors_group_ensure() -> Group:
    """The "Editors" group: may manage personas in the admin and nothing else."""
    group, _ = Group.objects.get_or_create(name=EDITORS_GROUP)
    permissions = Permission.objects.filter(
        content_type__app_label="personas", content_type__model="personaconfig"
    )
    group.permissions.set(permissions)
    return group


@transaction.atomic
def personas_set_active(*, queryset: QuerySet[PersonaConfig], active: bool) -> int:
    """Activate or deactivate personas; a changed persona gets a new version like any edit."""
    return queryset.exclude(is_active=active).update(is_active=active, version=F("version") + 1)
