"""The declared forms (approvals/forms.py): typed values or every problem keyed by field name,
what was typed kept either way; and over HTTP, the editor shown again with each error at its
field, and redirects that are paths to named routes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData

from approvals.forms import (
    ApproveForm,
    EditDraftForm,
    NewDraftForm,
    PreviewForm,
    posted_options,
    stored_options,
)
from tests.panel.conftest import PanelClient
from tests.panel.test_four_eyes import draft_form


def posted(items: Iterable[tuple[str, str]]) -> FormData:
    return FormData([(name, value) for name, value in items])


def test_a_valid_editor_form_is_typed() -> None:
    parsed = NewDraftForm.parse(
        posted(
            [
                ("template", "custom"),
                ("var.message", "hello"),
                ("destinations", "a"),
                ("destinations", "b"),
                ("options.pin", "yes"),
                ("options.silent", "default"),
                ("options.publish_at", "2030-01-01 12:00"),
                ("options.link_previews", "on"),
                ("correction_of", " 7 "),
                ("action", "save"),
            ]
        )
    )
    form = parsed.valid()
    assert parsed.errors == {}
    assert form.template == "custom" and form.variables == {"message": "hello"}
    assert form.destinations == ["a", "b"] and form.correction_of == 7
    assert form.options.pin is True and form.options.silent is None
    assert form.options.link_previews is True
    assert form.options.publish_at == datetime(2030, 1, 1, 12, tzinfo=UTC)


def test_every_problem_is_keyed_by_its_field_and_the_typing_is_kept() -> None:
    fields = [
        ("options.pin", "maybe"),
        ("options.silent", "no"),
        ("options.publish_at", "2030-01-01T12:00+02:00"),
        ("correction_of", "12abc"),
        ("var.message", "typed"),
    ]
    parsed = NewDraftForm.parse(posted(fields))
    assert parsed.form is None
    assert parsed.errors == {
        "options.pin": "choose default, yes or no",
        "options.publish_at": "must be UTC",
        "correction_of": "must be a draft id",
    }
    assert posted_options(parsed)["pin"] == "maybe"
    assert parsed.raw(NewDraftForm.variables) == {"message": "typed"}
    bad_time = PreviewForm.parse(posted([("options.publish_at", "tomorrow")]))
    assert bad_time.errors == {"options.publish_at": "use YYYY-MM-DD HH:MM (UTC)"}


def test_a_version_is_needed_to_save_not_to_preview() -> None:
    preview = EditDraftForm.parse(posted([("action", "preview")]))
    assert preview.valid().expected_version is None
    save = EditDraftForm.parse(posted([("action", "save"), ("expected_version", "x")]))
    assert save.errors == {"version": "missing; reload the page"}
    assert EditDraftForm.parse(posted([("expected_version", "3")])).valid().expected_version == 3


def test_approving_needs_the_hash_on_screen() -> None:
    assert ApproveForm.parse(posted([("credential", "123456")])).errors == {
        "content_hash": "missing; reload the page"
    }


def test_stored_options_read_back_as_the_same_options() -> None:
    class Stored:
        options: dict[str, Any] = {  # noqa: RUF012 - a stand-in for a Draft row
            "pin": False,
            "silent": None,
            "link_previews": True,
            "publish_at": "2030-01-01T12:00:00+00:00",
        }

    shown = stored_options(Stored())  # type: ignore[arg-type]
    assert shown == {
        "pin": "no",
        "silent": "",
        "publish_at": "2030-01-01T12:00:00",
        "link_previews": "on",
    }
    again = EditDraftForm.parse(
        posted([(f"options.{k}", v) for k, v in shown.items()] + [("expected_version", "1")])
    )
    options = again.valid().options
    assert (options.pin, options.silent, options.link_previews) == (False, None, True)
    assert options.publish_at == datetime(2030, 1, 1, 12, tzinfo=UTC)


async def test_the_editor_shows_each_error_at_its_field(
    world: dict[str, Any], client: PanelClient
) -> None:
    await client.login("carol")
    key = world["incident"].key
    refused = await client.post(
        f"/incidents/{key}/drafts",
        [*draft_form(world), ("options.pin", "maybe"), ("action", "save")],
    )
    assert refused.status_code == 422
    assert 'id="err-options-pin"' in refused.text and "choose default, yes or no" in refused.text
    assert '<option value="maybe"' not in refused.text  # only the offered choices
    assert "An attacker is draining the bridge pool." in refused.text  # what was typed is kept
    created = await client.post(
        f"/incidents/{key}/drafts", [*draft_form(world), ("action", "save")]
    )
    location = created.headers["location"]
    assert created.status_code == 303 and location.startswith("/drafts/")  # a path, not a URL
    await client.get(location)
    withdrawn = await client.post(f"{location}/withdraw", {"reason": "Superseded"})
    assert withdrawn.headers["location"] == location
