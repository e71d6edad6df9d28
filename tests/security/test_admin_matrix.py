"""Who may do what in the admin: every registered model, every admin URL (changelist, add, change,
delete, history, each custom URL) and every action, for each kind of user.

Roles: ``anonymous``; ``writer`` (not staff); ``staff`` (staff, no permission); ``viewer`` (staff with
only ``view_personaconfig``); ``editor`` (the Editors group, as ``load_demo`` sets it up); ``owner`` and
``other`` (staff authors with every story and run permission; the story and run under test are the
owner's, so ``other`` sees neither); ``superuser``.

Each request runs inside a rolled-back transaction and is observed as a short outcome: the status, where
a redirect goes (``login``, ``index``, ``list``, ``change``), ``changed`` when any row of the watched
tables differs afterwards and ``file`` for a download. A refused request must change nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import reversion
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.db.models import Model
from django.test import Client, RequestFactory
from django.urls import resolve
from rest_framework.authtoken.models import Token
from reversion.models import Version

from personas.cards import PersonaImport
from personas.forms import import_payload
from personas.models import PersonaConfig
from personas.selectors import ImportPlan, persona_versions
from personas.services import EDITORS_GROUP, personas_delete
from stories.models import GenerationRun, GenerationSettings, Story, StoryCast

User = get_user_model()
ROLES = ["anonymous", "writer", "staff", "viewer", "editor", "owner", "other", "superuser"]
AUTHOR_MODELS = ["story", "storycast", "screenplayversion", "generationrun"]
PASSWORD = "a-long-enough-password-2026"

# --- Expectations -----------------------------------------------------------------------------------

VIEW = {"changelist", "view", "history"}
ADD = {"add_form", "add"}
CHANGE = VIEW | {"change"}
DELETE = {"delete_form", "delete", "action:delete_selected"}
PERSONA_EXPORTS = {"action:export_ours", "action:export_card_json", "action:export_card_png"}
PERSONA_ACTIONS = PERSONA_EXPORTS | {"action:activate", "action:deactivate", "action:duplicate"}
# The live context preview (a POST answering JSON, saving nothing) and one revision of the history (what
# reverting to it would change) are for anyone who may view personas; reverting needs "change",
# recovering a deleted persona "add", importing both (upload and preview, then confirm).
PERSONA_READ = {"preview", "revision"}
PERSONA_IMPORT = {"import_form", "import", "import_confirm"}
PERSONA_RECOVER = {"recoverlist", "recover_form", "recover"}
PERSONA_ALL = (
    CHANGE | ADD | DELETE | PERSONA_ACTIONS | PERSONA_READ | PERSONA_IMPORT | PERSONA_RECOVER | {"revert"}
)
STORY_ALL = CHANGE | ADD | DELETE

# What each staff role may do, per model; a role or operation not listed is refused. The anonymous
# visitor and the writer (not staff) are sent to the login page everywhere.
ALLOWED: dict[str, dict[str, set[str]]] = {
    "auth.group": {"superuser": CHANGE | ADD | DELETE},
    "auth.user": {"superuser": CHANGE | ADD | DELETE | {"password_form", "password"}},
    "authtoken.tokenproxy": {"superuser": CHANGE | ADD | {"delete_form", "delete"}},
    "personas.personaconfig": {
        "superuser": PERSONA_ALL,
        "editor": PERSONA_ALL,
        "viewer": VIEW | PERSONA_EXPORTS | PERSONA_READ,
    },
    "stories.story": {"superuser": STORY_ALL, "owner": STORY_ALL, "other": {"changelist", "add_form", "add"}},
    # Runs are measurements: nobody adds or edits one in the admin.
    "stories.generationrun": {"superuser": VIEW | DELETE, "owner": VIEW | DELETE, "other": {"changelist"}},
    # One row, never deleted; a second cannot be added.
    "stories.generationsettings": {"superuser": CHANGE | ADD},
}
# Stories and runs are filtered to the user's own rows for staff who are not superusers, so the row
# under test (the owner's) is answered as if it did not exist: a redirect to the admin index with a
# message. "other" holds the owner's permissions, so gets that wherever the owner succeeds; the history
# page looks the row up before checking any permission, so every such user gets it there.
OWN_ROWS = {"stories.story", "stories.generationrun"}
OBJECT_OPS = {"view", "change", "delete_form", "delete", "history"}
SUCCESS = {"add": "302 list changed", "change": "302 list changed", "delete": "302 list changed"}
SUCCESS |= {"import_confirm": "302 list changed", "password": "302 change changed", "redirect": "302 change"}
SUCCESS |= {"revert": "302 change changed", "recover": "302 change changed"}
# Where Django's answer differs from the general rule above, and why.
SPECIAL = {
    # The user admin continues to the new user's page to set its details.
    ("auth.user", "add"): "302 change changed",
    # A run cannot be changed, so after a delete Django goes to the index, not the list.
    ("stories.generationrun", "delete"): "302 index changed",
    # With no action offered at all, Django ignores a posted one and shows the list.
    ("stories.generationsettings", "action:delete_selected"): "200",
    # A token's user is read-only once it exists (the key would move to another account): the change
    # form saves, and nothing changes.
    ("authtoken.tokenproxy", "change"): "302 list",
}


def _expected(model: str, role: str, op: str) -> str:
    if op == "preview" and role in ("anonymous", "writer"):
        # The live preview is read by the page's script: JSON saying so, not the login page.
        return "401" if role == "anonymous" else "403"
    if role in ("anonymous", "writer"):
        return "302 login"
    if op == "redirect":  # The bare object URL only forwards to the change page, which decides.
        return "302 change"
    if _hidden(model, role, op):
        return "302 index"
    allowed = ALLOWED[model].get(role, set())
    if op in allowed:
        return SPECIAL.get((model, op), _success(op))
    if op.startswith("action:") and "changelist" in allowed:
        # Django neither offers nor runs an action the user lacks the permission for: the changelist
        # comes back with "No action selected." and nothing happens.
        return SPECIAL.get((model, op), "302 list")
    return "403"


def _hidden(model: str, role: str, op: str) -> bool:
    if model not in OWN_ROWS or op not in OBJECT_OPS or role in ("owner", "superuser"):
        return False
    return op == "history" or (role == "other" and op in ALLOWED[model]["owner"])


def _success(op: str) -> str:
    if op in PERSONA_EXPORTS:
        return "200 file"
    if op.startswith("action:"):
        return "302 list changed"
    return SUCCESS.get(op, "200")


# --- The world and the requests -------------------------------------------------------------------


@dataclass
class World:
    users: dict[str, Any]
    bystander: Any
    persona: PersonaConfig
    group: Group
    story: Story
    run: GenerationRun
    revision: int  # a django-reversion Version of ``persona``
    deleted: int  # the last Version of a deleted persona, to recover


@dataclass(frozen=True)
class Case:
    op: str
    path: str  # under the model's admin root; {pk} is the object under test
    data: dict[str, Any] | None = None  # None: a GET
    prepare: Callable[[World], None] = field(default=lambda world: None)


def _staff(username: str, *codenames: str) -> Any:
    user = User.objects.create_user(username=username, password=PASSWORD, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def world(db: None) -> World:
    author_perms = [
        f"{verb}_{model}" for model in AUTHOR_MODELS for verb in ("add", "change", "delete", "view")
    ]
    users = {
        "writer": User.objects.create_user(username="writer", password=PASSWORD),
        "staff": _staff("staff"),
        "viewer": _staff("viewer", "view_personaconfig"),
        "editor": _staff("editor"),
        "owner": _staff("owner", *author_perms),
        "other": _staff("other", *author_perms),
        "superuser": User.objects.create_superuser(username="root", password=PASSWORD),
    }
    users["editor"].groups.add(Group.objects.get(name=EDITORS_GROUP))
    bystander = User.objects.create_user(username="bystander", password=PASSWORD)
    Token.objects.create(user=bystander)
    story = Story.objects.create(owner=users["owner"], title="Owner's story", plot="A plot.")
    # A run finished over an hour ago: one still streaming, or one the hourly limit still counts, cannot
    # be deleted (tests/stories/test_admin.py).
    run = GenerationRun.objects.create(
        user=users["owner"], story=story, model="offline", max_tokens=1024, status=GenerationRun.Status.FAILED
    )
    GenerationRun.objects.filter(pk=run.pk).update(created_at=run.created_at - timedelta(hours=2))
    with reversion.create_revision():
        persona = PersonaConfig.objects.create(
            name="hero", display_name="Hero", config_data={"voice": "Plain."}
        )
        ghost = PersonaConfig.objects.create(name="ghost", display_name="Ghost", config_data={})
    personas_delete(personas=[ghost], user=None)
    (deleted,) = Version.objects.get_deleted(PersonaConfig)
    revision = persona_versions(persona_pk=persona.pk).get().pk
    group = Group.objects.create(name="Story admins")
    return World(users, bystander, persona, group, story, run, revision, deleted.pk)


def _pk(model: str, world: World) -> Any:
    return {
        "auth.group": world.group.pk,
        "auth.user": world.bystander.pk,
        "authtoken.tokenproxy": world.bystander.pk,  # DRF's token admin is keyed by the user's pk
        "personas.personaconfig": world.persona.pk,
        "stories.story": world.story.pk,
        "stories.generationrun": world.run.pk,
        "stories.generationsettings": 1,
    }[model]


def _settings_row(world: World) -> None:
    GenerationSettings.objects.create(default_max_tokens=2048)


def _persona_inactive(world: World) -> None:
    PersonaConfig.objects.filter(pk=world.persona.pk).update(is_active=False)


def _as_it_is(world: World) -> None:
    """Nothing to prepare: the world has the object under test."""


def _model_cases(
    *, add: dict[str, Any], change: dict[str, Any], prepare: Callable[[World], None] = _as_it_is
) -> list[Case]:
    """The URLs every ModelAdmin has; ``prepare`` makes the object under test where the world has none."""
    return [
        Case("changelist", "", prepare=prepare),
        Case("add_form", "add/"),
        Case("add", "add/", add),
        Case("view", "{pk}/change/", prepare=prepare),
        Case("change", "{pk}/change/", change, prepare=prepare),
        Case("delete_form", "{pk}/delete/", prepare=prepare),
        Case("delete", "{pk}/delete/", {"post": "yes"}, prepare=prepare),
        Case("history", "{pk}/history/", prepare=prepare),
        Case("redirect", "{pk}/", prepare=prepare),
    ]


def _action(name: str, **kwargs: Any) -> Case:
    data = {"action": name, "_selected_action": ["{pk}"], "post": "yes"}
    return Case(f"action:{name}", "", data, **kwargs)


def _persona_post(name: str) -> dict[str, Any]:
    # As a browser posts the persona form: the per-part fields and the raw JSON (see personas/forms.py).
    # loaded_version: the version the change page was rendered from (optimistic concurrency).
    config = {"voice": "Gravel.", "config_data": '{"voice": "Gravel."}', "loaded_version": "1"}
    return {"name": name, "display_name": "Someone", "is_active": "on", **config}


def _persona_file() -> dict[str, Any]:
    data = b'{"name": "imported", "display_name": "Imported", "config_data": {"voice": "Soft."}}'
    return {"file": SimpleUploadedFile("imported.json", data)}


def _import_payload() -> str:
    # What the import preview page posts back to confirm (see personas.forms.import_payload).
    imported = PersonaImport(name="imported", display_name="Imported", config_data={"voice": "Soft."})
    plan = ImportPlan(name="imported", display_name="Imported", status="new", changes=[], version=None)
    return import_payload(personas=[imported], plans=[plan], source="imported.json")


SETTINGS_POST = {"default_model": "", "default_max_tokens": "16000", "formatting_rules": "Obey."}
STORY_FORMSETS = {
    f"{prefix}-{name}": "0" for prefix in ("cast", "versions") for name in ("TOTAL_FORMS", "INITIAL_FORMS")
}
USER_CHANGE = {
    "username": "renamed",
    "is_active": "on",
    "date_joined_0": "2026-01-01",
    "date_joined_1": "00:00",
}
NEW_PASSWORD = {"password1": PASSWORD + "!", "password2": PASSWORD + "!", "usable_password": "true"}

CASES: dict[str, list[Case]] = {
    "auth.group": [
        *_model_cases(add={"name": "New group"}, change={"name": "Renamed"}),
        _action("delete_selected"),
    ],
    "auth.user": [
        *_model_cases(add={"username": "newcomer", **NEW_PASSWORD}, change=USER_CHANGE),
        Case("password_form", "{pk}/password/"),
        Case("password", "{pk}/password/", NEW_PASSWORD),
        _action("delete_selected"),
    ],
    "authtoken.tokenproxy": _model_cases(add={"user": "{writer}"}, change={"user": "{writer}"}),
    "personas.personaconfig": [
        *_model_cases(add=_persona_post("newcomer"), change=_persona_post("hero")),
        Case("import_form", "import/"),
        Case("import", "import/", {"file": None}),  # answers the preview of what it would write
        Case("import_confirm", "import/", {"payload": "{payload}"}),
        Case("preview", "preview/", {"persona_id": "{pk}", "voice": "Typed.", "config_data": "{}"}),
        Case("revision", "{pk}/history/{revision}/"),
        Case("revert", "{pk}/history/{revision}/", {"loaded_version": "1"}),
        Case("recoverlist", "recover/"),
        Case("recover_form", "recover/{deleted}/"),
        Case("recover", "recover/{deleted}/", {"post": "yes"}),
        _action("activate", prepare=_persona_inactive),
        _action("deactivate"),
        *(
            _action(name)
            for name in ("duplicate", "export_ours", "export_card_json", "export_card_png", "delete_selected")
        ),
    ],
    "stories.story": [
        *_model_cases(
            add={"title": "New", "plot": "A plot.", "owner": "{writer}", **STORY_FORMSETS},
            change={"title": "Renamed", "plot": "A plot.", "owner": "{writer}", **STORY_FORMSETS},
        ),
        _action("delete_selected"),
    ],
    "stories.generationrun": [*_model_cases(add={}, change={"status": "failed"}), _action("delete_selected")],
    "stories.generationsettings": [
        *_model_cases(add=SETTINGS_POST, change=SETTINGS_POST, prepare=_settings_row),
        Case("add_again", "add/", SETTINGS_POST, prepare=_settings_row),
        _action("delete_selected", prepare=_settings_row),
    ],
}

WATCHED: list[type[Model]] = [
    Group,
    User,
    Token,
    PersonaConfig,
    Story,
    StoryCast,
    GenerationRun,
    GenerationSettings,
]
WATCHED += [User.groups.through, User.user_permissions.through, Group.permissions.through]


def _snapshot() -> list[list[dict[str, Any]]]:
    return [list(model._default_manager.order_by("pk").values()) for model in WATCHED]


def _url(model: str, case: Case, world: World) -> str:
    app_label, model_name = model.split(".")
    path = case.path.format(pk=_pk(model, world), revision=world.revision, deleted=world.deleted)
    return f"/admin/{app_label}/{model_name}/" + path


def _data(model: str, case: Case, world: World) -> dict[str, Any]:
    if case.data and "file" in case.data:
        return _persona_file()  # a new upload each time: a request reads it to the end
    fill = {"{pk}": _pk(model, world), "{writer}": world.users["writer"].pk, "{payload}": _import_payload()}
    return {key: _filled(value, fill) for key, value in (case.data or {}).items()}


def _filled(value: Any, fill: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_filled(item, fill) for item in value]
    return fill.get(value, value) if isinstance(value, str) else value


def _outcome(response: Any, *, changed: bool, list_url: str) -> str:
    parts = [str(response.status_code)]
    if response.has_header("Location"):
        parts.append(_where(response["Location"], list_url=list_url))
    if changed:
        parts.append("changed")
    if "attachment" in response.get("Content-Disposition", ""):
        parts.append("file")
    return " ".join(parts)


def _where(location: str, *, list_url: str) -> str:
    path = location.split("?")[0]
    names = {"/admin/login/": "login", "/admin/": "index", list_url: "list"}
    if path in names:
        return names[path]
    return "change" if path.endswith("/change/") else location


def _observe(client: Client, model: str, case: Case, world: World) -> str:
    list_url = f"/admin/{model.replace('.', '/')}/"
    # The rollback below also undoes server-side session changes (a password change cycles the
    # session key), so the client's cookies are put back with it.
    cookies = copy.deepcopy(client.cookies)
    with transaction.atomic():
        case.prepare(world)
        before = _snapshot()
        url = _url(model, case, world)
        response = client.get(url) if case.data is None else client.post(url, _data(model, case, world))
        outcome = _outcome(response, changed=_snapshot() != before, list_url=list_url)
        transaction.set_rollback(True)
    client.cookies = cookies
    return outcome


@pytest.mark.parametrize("model", sorted(CASES))
def test_every_role_gets_the_expected_answer_on_every_admin_url_and_action(world: World, model: str) -> None:
    mismatches = []
    for role in ROLES:
        client = Client()
        if role != "anonymous":
            client.force_login(world.users[role])
        for case in CASES[model]:
            actual = _observe(client, model, case, world)
            expected = _expected(model, role, case.op)
            if actual != expected:
                mismatches.append(f"{role:9} {case.op:26} expected {expected!r}, got {actual!r}")
    assert not mismatches, "\n".join(["", *mismatches])


# --- The matrix covers everything ---------------------------------------------------------------------


def test_every_registered_admin_model_has_cases_and_expectations() -> None:
    registered = {model._meta.label_lower for model in admin.site._registry}
    assert registered == set(CASES) == set(ALLOWED)


@pytest.mark.parametrize("model", sorted(CASES))
def test_the_cases_cover_every_url_and_action_of_the_model_admin(world: World, model: str) -> None:
    model_admin = next(a for m, a in admin.site._registry.items() if m._meta.label_lower == model)
    prefix = f"admin/{model.replace('.', '/')}/"
    routes = {prefix + str(pattern.pattern) for pattern in model_admin.get_urls()}
    covered = {resolve(_url(model, case, world)).route for case in CASES[model]}
    assert routes == covered
    request = RequestFactory().get("/admin/")
    request.user = world.users["superuser"]
    actions = {f"action:{name}" for name in model_admin.get_actions(request)}
    assert actions == {case.op for case in CASES[model] if case.op.startswith("action:")} - _never_offered(
        model
    )


def _never_offered(model: str) -> set[str]:
    # The generation settings row cannot be deleted, so delete_selected is offered to no one; the case
    # stays in the matrix to prove a forged POST is refused.
    return {"action:delete_selected"} if model == "stories.generationsettings" else set()


# --- The admin site's own pages -----------------------------------------------------------------------

# An app's index page exists only for users who may use one of its models.
APP_USERS = {
    "auth": {"superuser"},
    "authtoken": {"superuser"},
    "personas": {"superuser", "editor", "viewer"},
    "stories": {"superuser", "owner", "other"},
}
APPS = [f"/admin/{app}/" for app in APP_USERS]
PERSONA_SEARCH = "/admin/autocomplete/?app_label=stories&model_name=storycast&field_name=persona&term=he"


def _site_expected(role: str) -> dict[str, str]:
    if role in ("anonymous", "writer"):
        return dict.fromkeys(["/admin/", "/admin/jsi18n/", PERSONA_SEARCH, *APPS], "302 login")
    expected = {"/admin/": "200", "/admin/jsi18n/": "200"}
    expected |= {f"/admin/{app}/": "200" if role in users else "404" for app, users in APP_USERS.items()}
    # The persona search behind the cast picker needs the persona view permission.
    return expected | {PERSONA_SEARCH: "200" if role in APP_USERS["personas"] else "403"}


def test_every_role_gets_the_expected_answer_on_the_admin_site_pages(world: World) -> None:
    mismatches = []
    for role in ROLES:
        client = Client()
        if role != "anonymous":
            client.force_login(world.users[role])
        for url, expected in _site_expected(role).items():
            actual = _outcome(client.get(url), changed=False, list_url="")
            if actual != expected:
                mismatches.append(f"{role:9} {url:40} expected {expected!r}, got {actual!r}")
    assert not mismatches, "\n".join(["", *mismatches])
