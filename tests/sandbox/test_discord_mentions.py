"""Discord's mention rules, computed without the network."""

from __future__ import annotations

from bots.sandbox.discord_mentions import compute_mentions, validate_allowed_mentions

USERS = {101, 102}
ROLES = {201: True, 202: False}  # 202 is not mentionable


def _mentions(
    content: str, allowed: dict[str, object] | None, everyone: bool = True
) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    result = compute_mentions(
        content,
        allowed,
        known_user_ids=USERS,
        role_mentionable=ROLES,
        can_mention_everyone=everyone,
    )
    return result.user_ids, result.role_ids, result.everyone


TEXT = "@everyone <@101> <@!102> <@999> <@&201> <@&202>"


def test_omitted_allowed_mentions_parses_everything() -> None:
    assert _mentions(TEXT, None) == ((101, 102), (201, 202), True)


def test_parse_none_pings_nobody() -> None:
    assert _mentions(TEXT, {"parse": []}) == ((), (), False)


def test_explicit_lists() -> None:
    assert _mentions(TEXT, {"parse": [], "users": ["102"], "roles": ["201"]}) == (
        (102,),
        (201,),
        False,
    )


def test_everyone_and_unmentionable_roles_need_the_permission() -> None:
    assert _mentions(TEXT, None, everyone=False) == ((101, 102), (201,), False)
    assert _mentions("@here", {"parse": ["everyone"]}) == ((), (), True)


def test_escaped_and_lookalike_mentions_do_not_ping() -> None:
    for text in ("@\u200beveryone", "＠everyone", "<@\u200b101>", "`@here`"[1:-1].upper()):
        assert _mentions(text, None) == ((), (), False)


def test_replied_user() -> None:
    result = compute_mentions(
        "thanks",
        {"parse": [], "replied_user": True},
        known_user_ids=USERS,
        role_mentionable=ROLES,
        can_mention_everyone=False,
        replied_user_id=101,
    )
    assert result.user_ids == (101,)


def test_validation_errors_have_discords_shape() -> None:
    assert validate_allowed_mentions({"parse": ["users"], "users": ["101"]}) == {
        "_errors": [
            {
                "code": "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                "message": 'parse:["users"] and users: [ids...] are mutually exclusive.',
            }
        ]
    }
    assert "parse" in validate_allowed_mentions({"parse": ["all"]})
    assert validate_allowed_mentions({"parse": ["users", "everyone"]}) == {}
