"""A persona's config is a JSON object whatever writes it: the database refuses anything else."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from personas.models import PersonaConfig


@pytest.mark.django_db
@pytest.mark.parametrize("config", [["a list"], "a string", 7, None, True])
def test_code_that_skips_validation_cannot_store_a_config_that_is_not_an_object(config: Any) -> None:
    # The shell's create() and update() skip the model's validation; such a row made the persona's
    # contexts, its API page and its card exports a 500 for every writer who picked it.
    with pytest.raises(IntegrityError), transaction.atomic():
        PersonaConfig.objects.create(name="shell-made", display_name="Shell", config_data=config)
    persona = PersonaConfig.objects.create(name="kept", display_name="Kept", config_data={"voice": "Dry."})
    with pytest.raises(IntegrityError), transaction.atomic():
        PersonaConfig.objects.filter(pk=persona.pk).update(config_data=config)
    persona.refresh_from_db()
    assert persona.config_data == {"voice": "Dry."}


@pytest.mark.django_db
def test_an_object_config_passes_validation_once_with_the_validators_message() -> None:
    persona = PersonaConfig(name="listed", display_name="Listed", config_data=["a list"])
    with pytest.raises(ValidationError) as raised:
        persona.full_clean()
    # The field's own validator speaks; the constraint does not add a second message for the same field.
    assert list(raised.value.message_dict) == ["config_data"]
    assert len(raised.value.message_dict["config_data"]) == 1
    PersonaConfig(name="fine", display_name="Fine", config_data={"voice": "Dry."}).full_clean()
