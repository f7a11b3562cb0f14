"""People who use the service and the roles they hold."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from comms.clock import utcnow
from comms.db import Base, UTCDateTime
from comms.dbtypes import str_enum
from comms.enums import Role


class UserRole(Base):
    __tablename__ = "user_roles"
    __table_args__ = (UniqueConstraint("user_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="roles")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Two-factor: the secret is stored encrypted (see approvals' auth), never in plain text.
    totp_secret_encrypted: Mapped[str | None] = mapped_column(String(255), default=None)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    totp_last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    # Brute-force protection state.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    roles: Mapped[list[UserRole]] = relationship(
        back_populates="user", lazy="select", cascade="all, delete-orphan"
    )
    # The names of the roles held, read in the user's own SELECT: a page shows many people
    # (authors, editors, approvers, assignees), and loading each path's ``roles`` cost one
    # more query per path. ``role_set`` prefers the collection once it is loaded (a change
    # made in this session shows at once).
    role_names: Mapped[str | None] = column_property(
        select(func.aggregate_strings(UserRole.role, ","))
        .where(UserRole.user_id == id)
        .correlate_except(UserRole)
        .scalar_subquery(),
        # Roles change only through ``roles`` (loaded first), never by writing the user's own
        # row: a flush of the row (a sign-in, a TOTP step) leaves the names as they were read.
        expire_on_flush=False,
    )

    @property
    def role_set(self) -> frozenset[Role]:
        if "roles" in self.__dict__:  # loaded, maybe changed since the row was read
            return frozenset(Role(r.role) for r in self.roles)
        return frozenset(Role(name) for name in (self.role_names or "").split(",") if name)

    def has_role(self, *roles: Role) -> bool:
        """True if the user is active and holds any of ``roles``."""
        return self.active and bool(self.role_set.intersection(roles))

    def __repr__(self) -> str:
        return f"<User {self.username} {sorted(self.role_set)}>"


class GrantStatus(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class RoleGrant(Base):
    """A role that counts only once others approve it (decision_maker: the approvers' own
    quorum, the way a multisig's owners approve a new owner). Until then the person does not
    hold the role at all."""

    __tablename__ = "role_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[GrantStatus] = mapped_column(
        str_enum(GrantStatus, length=12), default=GrantStatus.PENDING, index=True
    )
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    reason: Mapped[str] = mapped_column(Text, default="")

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")
    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id], lazy="joined")
    approvals: Mapped[list[RoleGrantApproval]] = relationship(
        lazy="selectin", order_by="RoleGrantApproval.id", cascade="all, delete-orphan"
    )


class RoleGrantApproval(Base):
    __tablename__ = "role_grant_approvals"
    __table_args__ = (UniqueConstraint("grant_id", "approver_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grant_id: Mapped[int] = mapped_column(
        ForeignKey("role_grants.id", ondelete="CASCADE"), index=True
    )
    approver_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    approver: Mapped[User] = relationship(lazy="joined")
