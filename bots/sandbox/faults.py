"""Fault injection per endpoint: errors, hangs and dropped connections, reproducibly."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

KINDS = ("500", "502", "timeout", "drop", "429")


@dataclass
class Fault:
    id: int
    platform: str  # "discord", "telegram" or "*"
    endpoint: str  # a route like "POST /channels/{channel_id}/messages", a method name, or "*"
    kind: str
    probability: float = 1.0
    count: int | None = None  # remaining applications; None = unlimited
    retry_after: float = 1.0
    after_effect: bool = False
    hang_seconds: float = 300.0
    scope: str = "user"
    target: str | None = None  # only requests for this channel_id / chat_id
    applied: int = 0

    def matches(self, platform: str, endpoint: str, target: str | None = None) -> bool:
        if self.platform not in ("*", platform):
            return False
        if self.target is not None and self.target != target:
            return False
        if self.endpoint == "*":
            return True
        wanted = self.endpoint.strip()
        if wanted.lower() == endpoint.lower():
            return True
        # "/channels/{channel_id}/messages" matches every method of that route.
        return " " not in wanted and endpoint.split(" ", 1)[-1] == wanted

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "platform": self.platform,
            "endpoint": self.endpoint,
            "kind": self.kind,
            "probability": self.probability,
            "count": self.count,
            "retry_after": self.retry_after,
            "after_effect": self.after_effect,
            "hang_seconds": self.hang_seconds,
            "scope": self.scope,
            "target": self.target,
            "applied": self.applied,
        }


class FaultError(ValueError):
    pass


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._seed = seed
        self._ids = itertools.count(1)
        self.active: list[Fault] = []

    def reset(self) -> None:
        self.active.clear()
        self._rng = random.Random(self._seed)

    def add(self, spec: dict[str, Any]) -> Fault:
        if not isinstance(spec, dict):
            raise FaultError("a fault is a JSON object")
        kind = str(spec.get("kind", ""))
        if kind not in KINDS:
            raise FaultError(f"kind must be one of {', '.join(KINDS)}")
        platform = str(spec.get("platform", "*"))
        if platform not in ("discord", "telegram", "*"):
            raise FaultError("platform must be discord, telegram or *")
        try:
            probability = float(spec.get("probability", 1.0))
            count = spec.get("count")
            count = None if count is None else int(count)
            retry_after = float(spec.get("retry_after", 1.0))
            hang = float(spec.get("hang_seconds", 300.0))
        except (TypeError, ValueError) as exc:
            raise FaultError(f"bad number: {exc}") from exc
        if not 0.0 <= probability <= 1.0:
            raise FaultError("probability must be between 0 and 1")
        if count is not None and count < 1:
            raise FaultError("count must be at least 1")
        scope = str(spec.get("scope", "user"))
        if scope not in ("user", "shared", "global"):
            raise FaultError("scope must be user, shared or global")
        raw_target = spec.get("channel_id", spec.get("chat_id"))
        if raw_target is not None and not str(raw_target).lstrip("-").isdigit():
            raise FaultError("channel_id / chat_id must be an id")
        fault = Fault(
            id=next(self._ids),
            target=None if raw_target is None else str(raw_target),
            platform=platform,
            endpoint=str(spec.get("endpoint", "*")),
            kind=kind,
            probability=probability,
            count=count,
            retry_after=max(0.0, retry_after),
            after_effect=bool(spec.get("after_effect", False)),
            hang_seconds=max(0.0, hang),
            scope=scope,
        )
        self.active.append(fault)
        return fault

    def remove(self, fault_id: int) -> bool:
        before = len(self.active)
        self.active = [f for f in self.active if f.id != fault_id]
        return len(self.active) != before

    def pick(self, platform: str, endpoint: str, target: str | None = None) -> Fault | None:
        """The first matching fault that fires for this request (consumes one ``count``)."""
        for fault in self.active:
            if not fault.matches(platform, endpoint, target):
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            fault.applied += 1
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.active.remove(fault)
            return fault
        return None
