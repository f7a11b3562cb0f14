"""Column types shared by the models (beside ``comms.db``'s ``UTCDateTime``)."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Enum


def str_enum(enum: type[StrEnum], *, length: int) -> Enum:
    """A ``StrEnum`` stored as its members' values in a ``VARCHAR(length)``.

    The stored strings are the ones the plain ``String`` columns held, and there is no native
    ENUM type and no CHECK constraint, so the schema is unchanged and a new member needs no
    migration. What changes is on the Python side: a value outside the enum is refused before
    it is written, and rows read back members rather than bare strings.
    """
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
        length=length,
    )
