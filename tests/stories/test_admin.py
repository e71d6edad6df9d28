from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.db.models.signals import post_init
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from personas.services import editors_group_ensure
from stories.models import GenerationRun, GenerationSettings, ScreenplayVersion, Story, StoryCast

SETTINGS_ADD = "/admin/stories/generationsettings/add/"
SETTINGS_POST = {"default_model": "", "default_max_tokens": "16000", "formatting_rules": "Obey the editor."}


def _staff_client(user_factory: Any, *codenames: str) -> Client:
    staff = user_factory("staffer", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(staff)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(
    "codenames", [(), ("view_personaconfig", "change_personaconfig", "add_personaconfig")]
)
def test_staff_without_the_add_permission_cannot_create_the_generation_settings(
    user_factory: Any, codenames: tuple[str, ...]
) -> None:
    client = _staff_client(user_factory, *codenames)
    assert client.get(SETTINGS_ADD).status_code == 403
    assert client.post(SETTINGS_ADD, SETTINGS_POST).status_code == 403
    assert not GenerationSettings.objects.exists()


@pytest.mark.django_db
def test_staff_with_the_add_permission_create_the_generation_settings_once(user_factory: Any) -> None:
    client = _staff_client(user_factory, "add_generationsettings", "view_generationsettings")
    assert client.post(SETTINGS_ADD, SETTINGS_POST).status_code == 302
    assert GenerationSettings.objects.get().default_max_tokens == 16000
    # The row is a singleton: a second one cannot be added, only the first changed.
    assert client.get(SETTINGS_ADD).status_code == 403


@pytest.mark.django_db
def test_a_staff_author_adds_stories_only_for_themselves(user_factory: Any, other_writer: Any) -> None:
    client = _staff_client(user_factory, "add_story", "view_story", "change_story")
    response = client.post(
        "/admin/stories/story/add/",
        {
            "title": "Mine",
            "plot": "A plot.",
            "owner": other_writer.pk,
            "cast-TOTAL_FORMS": "0",
            "cast-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    assert Story.objects.get(title="Mine").owner.username == "staffer"


@pytest.mark.django_db
def test_an_admin_list_filtered_by_a_regular_expression_is_a_400_not_a_database_error(
    user_factory: Any,
) -> None:
    # The admin takes any field lookup from the query string; an invalid regex failed in the database.
    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    for url in (
        "/admin/stories/story/?title__regex=(",
        "/admin/stories/generationrun/?error_message__iregex=(",
        "/admin/personas/personaconfig/?display_name__regex=(",
        "/admin/auth/user/?username__regex=[",
    ):
        response = admin.get(url)
        assert response.status_code == 400, url
        assert "cannot be filtered by a regular expression" in response.content.decode()
    # The lists themselves, and their usual filters, still answer.
    assert admin.get("/admin/stories/story/?title__icontains=a").status_code == 200
    assert admin.get("/admin/auth/user/?q=root").status_code == 200


@pytest.mark.django_db
def test_an_admin_search_of_too_many_words_is_a_400_not_a_database_error(
    user_factory: Any, persona_factory: Any
) -> None:
    # Each word is one more condition: past about a thousand, SQLite refused the query ("Expression tree
    # is too large") in every admin list and the persona picker's search, a 500; PostgreSQL took seconds.
    persona_factory("hero", display_name="Hero")
    root = Client()
    root.force_login(user_factory("root", is_staff=True, is_superuser=True))
    many = " ".join(f"w{i}" for i in range(1001))
    picker = {"app_label": "stories", "model_name": "storycast", "field_name": "persona"}
    for url, search in (
        ("/admin/personas/personaconfig/", {}),
        ("/admin/stories/story/", {}),
        ("/admin/auth/user/", {}),
        ("/admin/autocomplete/", picker),
    ):
        key = "term" if search else "q"
        response = root.get(url, {**search, key: many})
        assert response.status_code == 400, url
        assert "A search in the admin has at most 50 words" in response.content.decode()
        assert root.get(url, {**search, key: " ".join(["hero"] * 50)}).status_code == 200, url


@pytest.mark.django_db
def test_an_admin_list_filtered_by_a_lookup_the_database_cannot_run_is_a_400(user_factory: Any) -> None:
    # Lookups the admin builds but the database (or Python's dates) fails on once the list is read.
    root = Client()
    root.force_login(user_factory("root", is_staff=True, is_superuser=True))
    editor = Client()
    ed = user_factory("ed", is_staff=True)
    ed.groups.add(editors_group_ensure())
    editor.force_login(ed)
    # Python's dates stop at 9999 and a range needs two bounds, whatever the database.
    refused = [
        (editor, "/admin/personas/personaconfig/?updated_at__year=99999"),
        (editor, "/admin/personas/personaconfig/?id__range=1"),
        (root, "/admin/stories/story/?updated_at__year=99999"),
        (root, "/admin/authtoken/tokenproxy/?created__year=0"),
    ]
    # SQLite has no JSON containment and overflows on an integer past 64 bits; PostgreSQL runs both
    # (an empty list for the integer), so there they are ordinary filters.
    database_dependent = [
        (editor, "/admin/personas/personaconfig/?config_data__contains=x"),
        (editor, "/admin/personas/personaconfig/?config_data__description__contains=x"),
        (editor, "/admin/personas/personaconfig/?id__in=99999999999999999999999"),
        (root, "/admin/auth/user/?id__in=99999999999999999999999"),
        (root, "/admin/stories/generationrun/?checkpoint__contains=1"),
    ]
    if connection.vendor == "sqlite":
        refused += database_dependent
    else:
        for client, url in database_dependent:
            assert client.get(url).status_code == 200, url
    for client, url in refused:
        response = client.get(url)
        assert response.status_code == 400, url
        assert "cannot be filtered this way" in response.content.decode()
    # What the admin refuses itself is still its own redirect, and the usual filters still answer.
    assert editor.get("/admin/personas/personaconfig/?version__in=1,x").status_code == 302
    assert editor.get("/admin/personas/personaconfig/?is_active__exact=1&o=2&q=a").status_code == 200
    assert root.get("/admin/auth/user/?id__in=1,2").status_code == 200


@pytest.mark.django_db
def test_a_right_to_left_story_title_stays_inside_its_own_words_in_the_admin(
    user_factory: Any, writer: Any, persona_factory: Any
) -> None:
    # A writer's title (or character name) with an override left open drew the admin's sentences around
    # it backwards: "Are you sure you want to delete the story "...‮evil"? All of the following related
    # items will be deleted:" ended reversed, as did "v1" after a version and the persona after a cast.
    persona = persona_factory("rogue-ai", display_name="Halcyon")
    story = Story.objects.create(
        owner=writer, title="Heist \u202eevil", plot="A plot.", latest_version_number=1
    )
    ScreenplayVersion.objects.create(story=story, number=1, content={"title": "T", "scenes": []})
    StoryCast.objects.create(story=story, persona=persona, character_name="MAX \u202eX")
    admin = user_factory("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    page = client.get(f"/admin/stories/story/{story.pk}/delete/").content.decode()
    title = "\u2068Heist \u202eevil\u2069"
    assert f'delete the story "{title}"? All of the following related items will be deleted' in page
    assert f"Screenplay version: {title} v1" in page
    assert f"Cast member: \u2068MAX \u202eX\u2069 ({persona.pk})" in page
    assert Story.objects.get().title == "Heist \u202eevil"  # stored as typed


@pytest.mark.django_db
def test_the_admin_searches_ignore_case_beyond_ascii(
    user_factory: Any, writer: Any, persona_factory: Any
) -> None:
    # Django's admin search is icontains, SQLite's LIKE, which folds ASCII letters only: an editor's
    # "émile" did not find the persona "Émile", nor a superuser's "été" the story "Été à Paris".
    persona_factory("emile", display_name="Émile Ørsted")
    persona_factory("sam", display_name="Sam")
    Story.objects.create(owner=writer, title="Été à Paris", plot="A plot.", latest_version_number=1)
    Story.objects.create(owner=writer, title="Winter", plot="Snow.", latest_version_number=1)
    editor = user_factory("editor", is_staff=True)
    editor.groups.add(editors_group_ensure())
    editing = Client()
    editing.force_login(editor)
    personas = editing.get("/admin/personas/personaconfig/", {"q": 'émile "ørsted"'})
    assert personas.status_code == 200
    assert [p.name for p in personas.context["cl"].result_list] == ["emile"]
    admin = user_factory("root", is_staff=True, is_superuser=True)
    root = Client()
    root.force_login(admin)
    stories = root.get("/admin/stories/story/", {"q": "ÉTÉ"})
    assert [s.title for s in stories.context["cl"].result_list] == ["Été à Paris"]
    by_writer = root.get("/admin/stories/story/", {"q": f"été {writer.username.upper()}"})
    assert [s.title for s in by_writer.context["cl"].result_list] == ["Été à Paris"]


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["delete page", "delete action"])
def test_a_run_still_streaming_or_of_the_last_hour_cannot_be_deleted_in_the_admin_an_older_one_can(
    django_user_model: Any, writer: Any, how: str
) -> None:
    # Its save at the end needs its row: deleted, the writer's screenplay was lost when the run ended
    # ("another server process took this run over").
    admin = django_user_model.objects.create_superuser("boss", password="pw-boss")
    client = Client()
    client.force_login(admin)
    running = GenerationRun.objects.create(user=writer, model="offline", max_tokens=1024, lease_owner="h:1:x")
    done = GenerationRun.objects.create(
        user=writer, model="offline", max_tokens=1024, status=GenerationRun.Status.SUCCEEDED
    )

    def delete(run: GenerationRun) -> Any:
        if how == "delete page":
            return client.post(f"/admin/stories/generationrun/{run.pk}/delete/", {"post": "yes"})
        selected = {"action": "delete_selected", "_selected_action": [run.pk], "post": "yes"}
        return client.post("/admin/stories/generationrun/", selected)

    response = delete(running)
    assert response.status_code == 200
    assert (
        f"Run {running.pk} (streaming): still running; delete it once it has ended."
        in response.content.decode()
    )
    assert GenerationRun.objects.filter(pk=running.pk).exists()
    # Ended within the hour, it still counts toward its writer's hourly limit: deleting it gave that start
    # back (a staff author with the delete permission could start without limit).
    response = delete(done)
    until = timezone.localtime(done.created_at + timedelta(hours=1))
    assert (
        html.escape(
            f"Run {done.pk} (succeeded): counts toward its writer's generations of the hour until "
            f"{until:%Y-%m-%d %H:%M:%S %Z}; delete it after that."
        )
        in response.content.decode()
    )
    assert GenerationRun.objects.filter(pk=done.pk).exists()
    GenerationRun.objects.filter(pk=done.pk).update(created_at=timezone.now() - timedelta(hours=1, seconds=1))
    assert delete(done).status_code == 302
    assert not GenerationRun.objects.filter(pk=done.pk).exists()


def _story_change_post(story: Story, **fields: Any) -> dict[str, Any]:
    """The story's change form as the admin page posts it: its fields, and its inlines as rendered."""
    data: dict[str, Any] = {"title": story.title, "plot": story.plot, "owner": story.owner_id}
    members = list(StoryCast.objects.filter(story=story).order_by("order"))
    versions = list(ScreenplayVersion.objects.filter(story=story))
    for prefix, rows in (("cast", members), ("versions", versions)):
        data |= {f"{prefix}-TOTAL_FORMS": len(rows), f"{prefix}-INITIAL_FORMS": len(rows)}
        data |= {f"{prefix}-{i}-id": row.pk for i, row in enumerate(rows)}
        data |= {f"{prefix}-{i}-story": story.pk for i in range(len(rows))}
    for i, member in enumerate(members):
        data |= {f"cast-{i}-persona": member.persona_id, f"cast-{i}-character_name": member.character_name}
        data[f"cast-{i}-order"] = member.order
    return data | fields


@pytest.mark.django_db
def test_the_admin_cannot_recast_a_story_behind_its_screenplay(
    user_factory: Any, writer: Any, persona_factory: Any
) -> None:
    # The cast is what the latest version casts (stories.services: an active persona playing one of its
    # characters). Edited in the admin, a superuser cast a deactivated persona as a character the
    # screenplay does not have, renamed a member with an escape sequence and dropped another: the
    # writer's page listed that cast, and Regenerate started from the deactivated persona.
    hero, villain = persona_factory("hero"), persona_factory("villain")
    retired = persona_factory("retired")
    retired.is_active = False
    retired.save()
    story = Story.objects.create(owner=writer, title="The Heist", plot="A vault.", latest_version_number=1)
    ScreenplayVersion.objects.create(
        story=story,
        number=1,
        content={
            "title": "The Heist",
            "characters": [{"name": "MAX", "persona": "hero"}, {"name": "VERA", "persona": "villain"}],
            "scenes": [{"heading": "INT. VAULT - NIGHT", "elements": [{"type": "action", "text": "Dark."}]}],
        },
    )
    StoryCast.objects.create(story=story, persona=hero, character_name="MAX", order=0)
    StoryCast.objects.create(story=story, persona=villain, character_name="VERA", order=1)
    before = list(StoryCast.objects.order_by("order").values_list("persona__name", "character_name", "order"))
    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    page = admin.get(f"/admin/stories/story/{story.pk}/change/").content.decode()
    assert "MAX" in page and "VERA" in page  # shown,
    assert 'name="cast-0-character_name"' not in page  # not editable
    recast = _story_change_post(story)
    recast |= {"cast-0-character_name": "MAX\x1b[31m", "cast-1-DELETE": "on", "cast-TOTAL_FORMS": 3}
    recast |= {"cast-2-story": story.pk, "cast-2-persona": retired.pk, "cast-2-character_name": "NOBODY"}
    response = admin.post(f"/admin/stories/story/{story.pk}/change/", recast)
    assert response.status_code == 302
    after = list(StoryCast.objects.order_by("order").values_list("persona__name", "character_name", "order"))
    assert after == before == [("hero", "MAX", 0), ("villain", "VERA", 1)]
    writing = Client()
    writing.force_login(writer)
    assert "retired" not in writing.get(f"/stories/{story.pk}/").content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        (
            "title",
            "The Heist\x1b[2J",
            "The title contains a line break or another control character (U+001B)",
        ),
        ("title", "\u200f\u200f", "The title has no visible character"),
        # At its edge too (Django's strip cut it off and saved the title).
        ("title", "The Heist\x85", "The title contains a line break or another control character (U+0085)"),
        ("plot", "A vault.\x07", "The plot contains a control character (U+0007)"),
        ("plot", "x" * 101, "Ensure this value has at most 100 characters (it has 101)."),
    ],
)
def test_the_admin_refuses_a_title_or_plot_the_writer_could_not_save(
    user_factory: Any, writer: Any, settings: Any, field: str, value: str, error: str
) -> None:
    # The writer's settings form and PATCH refuse these; the admin saved them, and the story page's
    # Regenerate then refused a plot whose fault the writer could not see (or past the limit, at all).
    settings.STORY_MAX_PLOT_CHARS = 100
    story = Story.objects.create(owner=writer, title="The Heist", plot="A vault.")
    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    for url in (f"/admin/stories/story/{story.pk}/change/", "/admin/stories/story/add/"):
        response = admin.post(url, _story_change_post(story, **{field: value}))
        assert response.status_code == 200, url
        assert error in response.content.decode()
    assert Story.objects.get().title == "The Heist"
    assert Story.objects.get().plot == "A vault."


@pytest.mark.django_db
def test_an_admin_edit_of_a_story_keeps_a_version_saved_meanwhile(user_factory: Any, writer: Any) -> None:
    # The admin saved the whole row it had read, its version counter included: a version saved between
    # that read and the save (a generation ending) had its number handed out again, and the next save
    # of the story failed on the duplicate number, losing that screenplay.
    story = Story.objects.create(owner=writer, title="The Heist", plot="A vault.", latest_version_number=1)
    data = _story_change_post(story, title="The Big Heist")
    read: list[Story] = []

    def version_saved_meanwhile(sender: Any, instance: Story, **kwargs: Any) -> None:
        if instance.pk == story.pk and not read:
            read.append(instance)  # the admin's own read of the row; another save commits now
            Story.objects.filter(pk=story.pk).update(latest_version_number=2)

    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    post_init.connect(version_saved_meanwhile, sender=Story)
    try:
        assert admin.post(f"/admin/stories/story/{story.pk}/change/", data).status_code == 302
    finally:
        post_init.disconnect(version_saved_meanwhile, sender=Story)
    assert read
    saved = Story.objects.get()
    assert (saved.title, saved.latest_version_number) == ("The Big Heist", 2)


@pytest.mark.django_db
def test_a_storys_owner_cannot_be_changed_in_the_admin(
    user_factory: Any, writer: Any, other_writer: Any
) -> None:
    # Its versions and runs are its owner's: moved to another writer, the first one's run list showed the
    # new owner's title for it (linking to a 404), and a generation of it under way failed "forbidden".
    story = Story.objects.create(owner=writer, title="The Heist", plot="A vault.")
    GenerationRun.objects.create(
        user=writer, story=story, model="offline", max_tokens=1024, status="succeeded"
    )
    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    assert 'name="owner"' not in admin.get(f"/admin/stories/story/{story.pk}/change/").content.decode()
    moved = _story_change_post(story, owner=other_writer.pk, title="Their Heist")
    assert admin.post(f"/admin/stories/story/{story.pk}/change/", moved).status_code == 302
    assert Story.objects.get().owner == writer
    assert 'name="owner"' in admin.get("/admin/stories/story/add/").content.decode()  # chosen when added


def _story_with_runs_and_versions(writer: Any, count: int) -> Story:
    story = Story.objects.create(owner=writer, title="Drafts", plot="A plot.", latest_version_number=count)
    runs = GenerationRun.objects.bulk_create(
        GenerationRun(user=writer, story=story, status="succeeded", model="offline", max_tokens=1024)
        for _ in range(count)
    )
    content = {
        "title": "T",
        "scenes": [{"heading": "INT. ROOM", "elements": [{"type": "action", "text": "x"}]}],
    }
    ScreenplayVersion.objects.bulk_create(
        ScreenplayVersion(story=story, number=number, content=content, run=run)
        for number, run in enumerate(runs, start=1)
    )
    return story


@pytest.mark.django_db
def test_a_story_with_many_versions_opens_in_the_admin_in_a_few_queries(
    user_factory: Any, writer: Any, django_assert_max_num_queries: Any
) -> None:
    # Every version was an inline row, read with its screenplay, its run and its story one query each: a
    # story of 3,000 versions (a script's edits) was 6,008 queries and 4 MB, about ten seconds.
    story = _story_with_runs_and_versions(writer, 120)
    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    with django_assert_max_num_queries(10):
        page = admin.get(f"/admin/stories/story/{story.pk}/change/").content.decode()
    shown = re.findall(r"Drafts v(\d+)", page)
    assert sorted(map(int, shown), reverse=True) == list(range(120, 70, -1))  # the latest 50
    assert "the latest 50" in page
    # Its story form still saves (the version rows are shown, not posted back).
    response = admin.post(
        f"/admin/stories/story/{story.pk}/change/", _story_change_post(story, title="Redrafts")
    )
    assert response.status_code == 302
    assert Story.objects.get(pk=story.pk).title == "Redrafts"


@pytest.mark.django_db
def test_the_runs_list_in_the_admin_costs_the_same_queries_for_many_runs(
    user_factory: Any, writer: Any
) -> None:
    # Each row named its story, one query per run: a page of 100 runs was 109 queries. And each row was
    # read with the model text, diagnostics and checkpoint the list never shows (each up to hundreds of KB).
    stories = Story.objects.bulk_create(
        Story(owner=writer, title=f"Story {i}", plot="A plot.") for i in range(40)
    )
    GenerationRun.objects.bulk_create(
        GenerationRun(
            user=writer,
            story=story,
            status="failed",
            model="offline",
            max_tokens=1024,
            raw_text="INT. " * 1000,
        )
        for story in stories
    )
    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    with CaptureQueriesContext(connection) as queries:
        page = admin.get("/admin/stories/generationrun/").content.decode()
    assert all(f"Story {i}" in page for i in range(40))
    assert len(queries.captured_queries) <= 10
    assert not [query for query in queries.captured_queries if "raw_text" in query["sql"]]
    # The model filter's choices and the date bar read the whole table at every view (SELECT DISTINCT
    # over every run); the filter's choices now come from the registry, and it still filters.
    assert not [query for query in queries.captured_queries if "DISTINCT" in query["sql"].upper()]
    assert 'href="?model=offline"' in page
    GenerationRun.objects.create(user=writer, status="failed", model="claude-sonnet-4-6", max_tokens=1024)
    filtered = admin.get("/admin/stories/generationrun/", {"model": "claude-sonnet-4-6"})
    assert [run.model for run in filtered.context["cl"].result_list] == ["claude-sonnet-4-6"]


@pytest.mark.django_db
def test_a_story_with_a_full_cast_opens_in_the_admin_in_a_few_queries(
    user_factory: Any, writer: Any, persona_factory: Any, django_assert_max_num_queries: Any
) -> None:
    # Each cast member's persona was read on its own: a cast of 12 (STORY_MAX_PERSONAS) was 12 more queries.
    story = _story_with_runs_and_versions(writer, 1)
    for order in range(12):
        persona = persona_factory(f"member-{order}")
        StoryCast.objects.create(story=story, persona=persona, character_name=f"ROLE {order}", order=order)
    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    with django_assert_max_num_queries(8):
        page = admin.get(f"/admin/stories/story/{story.pk}/change/").content.decode()
    assert all(f"ROLE {order}" in page for order in range(12))


@pytest.mark.django_db
def test_the_story_admin_renders_no_maxlength_for_a_browser_to_cut_a_paste_at(
    user_factory: Any, writer: Any
) -> None:
    # A browser counts maxlength in UTF-16 units: a title of 150 emoji (150 characters, within 200) was
    # cut to 100 when pasted. The form's own check counts characters and keeps the text when refusing.
    story = Story.objects.create(owner=writer, title="A title", plot="A plot.")
    admin = Client()
    admin.force_login(user_factory("root", is_staff=True, is_superuser=True))
    page = admin.get(f"/admin/stories/story/{story.pk}/change/").content.decode()
    assert 'name="title"' in page and "maxlength" not in page


@pytest.mark.django_db
def test_the_runs_search_finds_a_user_s_runs_and_a_title_s_start_as_an_index_serves_them(
    user_factory: Any, writer: Any, other_writer: Any
) -> None:
    # It matched text anywhere in the username, the error code or the title, which read every run with
    # its user and story (35 ms at 22,000 runs on PostgreSQL; docs/known-gaps.md). Now a whole
    # username or the start of a title, case and accents aside, each looked up before the runs.
    paris = Story.objects.create(
        owner=other_writer, title="Été à Paris", plot="A plot.", latest_version_number=1
    )
    mine = GenerationRun.objects.create(user=writer, model="offline", max_tokens=1024, status="succeeded")
    theirs = GenerationRun.objects.create(
        user=other_writer,
        story=paris,
        model="offline",
        max_tokens=1024,
        status="failed",
        error_code="llm_unavailable",
    )
    root = Client()
    root.force_login(user_factory("root", is_staff=True, is_superuser=True))

    def found(**query: str) -> list[int]:
        page = root.get("/admin/stories/generationrun/", query)
        assert page.status_code == 200
        return [run.pk for run in page.context["cl"].result_list]

    assert found(q=writer.username.upper()) == [mine.pk]
    assert found(q="ÉTÉ") == [theirs.pk]
    assert found(q='"été à"') == [theirs.pk]
    # The search is one phrase: a title's first words, quoted or not.
    assert found(q="été à") == [theirs.pk]
    assert found(q="été paris") == []
    assert found(q=f"{other_writer.username} été") == []
    # Not a part of a username, nor a word inside a title.
    assert found(q=writer.username[1:]) == []
    assert found(q="paris") == []
    # Error codes are a filter now, of the protocol's codes.
    assert found(error_code="llm_unavailable") == [theirs.pk]
    page = root.get("/admin/stories/generationrun/").content.decode()
    assert "A username (the whole of it) or the start of a story" in page
