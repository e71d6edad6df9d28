from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings

from personas import cache as context_cache
from personas.cards import PersonaImport
from personas.models import PersonaConfig
from personas.selectors import PersonaContext, persona_contexts, persona_list
from personas.services import persona_import, personas_set_active


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Any:
    """Run a block as if its transaction committed, so after-commit invalidation happens."""

    def run(block: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return block()

    return run


@pytest.fixture
def fifty(persona_factory: Any, committed: Any) -> list[str]:
    names = [f"persona-{i:02d}" for i in range(50)]
    committed(lambda: [persona_factory(name) for name in names])
    return names


@pytest.mark.django_db
def test_fifty_names_cost_one_query_cold_and_none_warm(
    fifty: list[str], django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(1):
        cold = persona_contexts(names=fifty)
    with django_assert_num_queries(0):
        warm = persona_contexts(names=fifty)
    assert [c.name for c in cold.contexts] == fifty
    assert warm == cold
    assert cold.contexts[7] == PersonaContext(
        name="persona-07",
        display_name="Persona 07",
        context="Personality: persona-07 is brave.\n\nVoice: Plain.",
        tokens=13,
        shortened=False,
        version=1,
    )


@pytest.mark.django_db
def test_order_is_kept_duplicates_dropped_and_unknown_and_inactive_reported(
    persona_factory: Any, committed: Any, django_assert_num_queries: Any
) -> None:
    committed(lambda: [persona_factory(n) for n in ["ann", "bob", "cy"]])
    committed(lambda: personas_set_active(queryset=PersonaConfig.objects.filter(name="bob"), active=False))
    names = ["cy", "nobody", "ann", "bob", "cy", "ann", "ghost"]
    with django_assert_num_queries(1):
        result = persona_contexts(names=names)
    assert [c.name for c in result.contexts] == ["cy", "ann"]
    assert result.missing == ["nobody", "ghost"]
    assert result.inactive == ["bob"]
    # Unknown and inactive answers are cached too: asking again costs nothing.
    with django_assert_num_queries(0):
        assert persona_contexts(names=names) == result


@pytest.mark.django_db
def test_no_names_means_no_query(django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        assert persona_contexts(names=[]).contexts == []


@pytest.mark.django_db
def test_unicode_names_are_found_and_reported_exactly(committed: Any) -> None:
    committed(
        lambda: PersonaConfig.objects.create(
            name="京都-詩人", display_name="詩人", config_data={"voice": "静か。"}
        )
    )
    result = persona_contexts(names=["京都-詩人", "ñandú spaced name", "京都-詩人"])
    assert [(c.name, c.context) for c in result.contexts] == [("京都-詩人", "Voice: 静か。")]
    assert result.missing == ["ñandú spaced name"]
    assert persona_contexts(names=["京都-詩人"]).contexts == result.contexts


@pytest.mark.django_db
def test_an_edit_is_served_right_after_it_commits(persona_factory: Any, committed: Any) -> None:
    hero = committed(lambda: persona_factory("hero", voice="Old voice."))
    assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: Old voice."

    def edit() -> None:
        hero.config_data = {"voice": "New voice."}
        hero.save()

    committed(edit)
    context = persona_contexts(names=["hero"]).contexts[0]
    assert (context.context, context.version) == ("Voice: New voice.", 2)


@pytest.mark.django_db
def test_an_uncommitted_edit_is_never_cached(persona_factory: Any, committed: Any) -> None:
    hero = committed(lambda: persona_factory("hero", voice="Old voice."))
    assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: Old voice."
    hero.config_data = {"voice": "Uncommitted."}
    hero.save()  # inside the test's transaction: not committed, invalidation pending
    assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: Uncommitted."
    PersonaConfig.objects.filter(pk=hero.pk).update(config_data={"voice": "Old voice."})
    # Had the uncommitted read been cached, this would still say "Uncommitted.".
    assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: Old voice."


@pytest.mark.django_db
def test_a_reader_that_read_before_the_commit_cannot_cache_stale_text(
    persona_factory: Any, committed: Any
) -> None:
    hero = committed(lambda: persona_factory("hero", voice="Old voice."))
    # A reader takes its stamp, then an edit commits and bumps it, then the reader stores what it read.
    before = cache.get(context_cache.stamp_key("hero"))
    persona_contexts(names=["hero"])
    stamp = cache.get(context_cache.stamp_key("hero"))
    assert stamp is not None and before is None

    def edit() -> None:
        hero.config_data = {"voice": "New voice."}
        hero.save()

    committed(edit)
    # The reader's late write of the old text, tagged with the stamp it saw before the edit:
    old_entry = {
        "stamp": stamp,
        "exists": True,
        "active": True,
        "display_name": "Hero",
        "context": "Voice: Old voice.",
        "tokens": 5,
        "shortened": False,
        "version": 1,
    }
    cache.set(context_cache.entry_key("hero", 600), old_entry)
    assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: New voice."


@pytest.mark.django_db
def test_deletion_activation_and_creation_invalidate(persona_factory: Any, committed: Any) -> None:
    villain = committed(lambda: persona_factory("villain"))
    assert persona_contexts(names=["villain", "newcomer"]).missing == ["newcomer"]
    committed(lambda: persona_factory("newcomer"))
    committed(
        lambda: personas_set_active(queryset=PersonaConfig.objects.filter(name="villain"), active=False)
    )
    result = persona_contexts(names=["villain", "newcomer"])
    assert ([c.name for c in result.contexts], result.inactive) == (["newcomer"], ["villain"])
    committed(villain.delete)
    assert persona_contexts(names=["villain"]).missing == ["villain"]


@pytest.mark.django_db
def test_a_rename_forgets_the_old_name(persona_factory: Any, committed: Any) -> None:
    hero = committed(lambda: persona_factory("hero"))
    assert persona_contexts(names=["hero"]).missing == []
    loaded = PersonaConfig.objects.get(pk=hero.pk)

    def rename() -> None:
        loaded.name = "hero-renamed"
        loaded.save()

    committed(rename)
    assert persona_contexts(names=["hero", "hero-renamed"]).missing == ["hero"]


@pytest.mark.django_db
def test_long_contexts_are_shortened_to_the_budget(persona_factory: Any, committed: Any) -> None:
    committed(lambda: persona_factory("talker", backstory="He talks a lot. " * 400))
    with override_settings(PERSONA_CONTEXT_TOKEN_BUDGET=100):
        context = persona_contexts(names=["talker"]).contexts[0]
    assert context.shortened and context.tokens <= 100
    assert context.context.endswith("He talks a lot. [shortened]")
    # A new budget is a new cache entry, never the old cut.
    with override_settings(PERSONA_CONTEXT_TOKEN_BUDGET=200):
        assert persona_contexts(names=["talker"]).contexts[0].tokens > 100


@pytest.mark.django_db
@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}})
def test_without_a_cache_every_read_is_one_query(
    persona_factory: Any, django_assert_num_queries: Any
) -> None:
    persona_factory("hero")
    for _ in range(2):
        with django_assert_num_queries(1):
            assert [c.name for c in persona_contexts(names=["hero"]).contexts] == ["hero"]


@pytest.mark.django_db
def test_persona_list_shows_active_personas_matching_the_search(persona_factory: Any) -> None:
    persona_factory("noir-detective", "Sam Marlowe")
    persona_factory("starship-captain", "Captain Okafor")
    persona_factory("old-one", "Retired Sam")
    PersonaConfig.objects.filter(name="old-one").update(is_active=False)
    assert [p.name for p in persona_list(search=" sam ")] == ["noir-detective"]
    assert [p.name for p in persona_list(search="CAPTAIN")] == ["starship-captain"]
    assert [p.name for p in persona_list()] == ["starship-captain", "noir-detective"]


@pytest.mark.django_db
def test_persona_list_search_ignores_case_beyond_ascii(persona_factory: Any) -> None:
    # The picker's search found "Émile" by "Émile" only on SQLite (its LIKE folds ASCII letters only).
    persona_factory("emile", "Émile Ørsted")
    assert [p.name for p in persona_list(search="émile")] == ["emile"]
    assert [p.name for p in persona_list(search="ØRSTED")] == ["emile"]


@pytest.mark.django_db
def test_an_import_is_served_right_after_it_commits(persona_factory: Any, committed: Any) -> None:
    committed(lambda: persona_factory("hero", voice="Old voice."))
    assert persona_contexts(names=["hero", "sidekick"]).missing == ["sidekick"]
    committed(
        lambda: persona_import(
            personas=[
                PersonaImport(name="hero", display_name="Hero", config_data={"voice": "Imported voice."}),
                PersonaImport(name="sidekick", display_name="Sidekick", config_data={"voice": "Eager."}),
            ]
        )
    )
    result = persona_contexts(names=["hero", "sidekick"])
    assert [c.context for c in result.contexts] == ["Voice: Imported voice.", "Voice: Eager."]
    assert result.missing == []


_UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1: connections are refused
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
}


@pytest.mark.django_db
def test_a_cache_outage_falls_back_to_the_database(
    persona_factory: Any, committed: Any, caplog: Any, django_assert_num_queries: Any
) -> None:
    with override_settings(CACHES=_UNREACHABLE_REDIS):
        hero = committed(lambda: persona_factory("hero", voice="Calm."))
        with django_assert_num_queries(1):
            assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: Calm."

        def edit() -> None:
            hero.config_data = {"voice": "Still calm."}
            hero.save()

        committed(edit)  # the after-commit invalidation fails, is logged, and the save stands
        assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: Still calm."
    assert "could not invalidate the cached context of persona 'hero'" in caplog.text
    assert "cache unavailable for reading" in caplog.text


@pytest.mark.django_db
def test_persona_list_search_finds_accents_typed_composed_or_decomposed(persona_factory: Any) -> None:
    # A display name pasted decomposed (an "e" and a combining acute, as macOS file names are) was not
    # found by "josé" typed on a keyboard (composed), nor a composed one by a decomposed search.
    persona_factory("decomposed", unicodedata.normalize("NFD", "José Núñez"))
    persona_factory("composed", unicodedata.normalize("NFC", "Zoë Ångström"))
    assert [p.name for p in persona_list(search=unicodedata.normalize("NFC", "josé"))] == ["decomposed"]
    assert [p.name for p in persona_list(search=unicodedata.normalize("NFD", "NÚÑEZ"))] == ["decomposed"]
    assert [p.name for p in persona_list(search=unicodedata.normalize("NFD", "zoë"))] == ["composed"]
    assert [p.name for p in persona_list(search=unicodedata.normalize("NFC", "ångström"))] == ["composed"]


@pytest.mark.django_db
def test_persona_list_search_folds_greek_and_turkish_letters_the_same_on_both_databases(
    persona_factory: Any,
) -> None:
    # Python lowers a word's last capital sigma to its final form where PostgreSQL writes the ordinary
    # one: a Greek name typed in capitals was not found on PostgreSQL. Python lowers "İ" to "i" and a combining dot where PostgreSQL
    # writes "i": "ipek" did not find "İpek" on SQLite.
    persona_factory("greek", "Σίσυφος")
    persona_factory("turkish", "İpek Yıldız")  # noqa: RUF001
    assert [p.name for p in persona_list(search="ΣΊΣΥΦΟΣ")] == ["greek"]
    assert [p.name for p in persona_list(search="σίσυφοσ")] == ["greek"]
    assert [p.name for p in persona_list(search="ipek")] == ["turkish"]
    assert [p.name for p in persona_list(search="İPEK")] == ["turkish"]
