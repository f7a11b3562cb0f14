"""The request log: one JSON object per handled request, for benchmarks and audits."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import IO, Any


class RequestLog:
    """Keeps recent entries in memory (``GET /control/requests``) and appends to a file."""

    def __init__(self, path: Path | None = None, keep: int = 200_000) -> None:
        self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._seq = 0
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)
        self.stats = Stats()

    def add(self, entry: dict[str, Any]) -> None:
        self._seq += 1
        entry = {"seq": self._seq, **entry}
        self._entries.append(entry)
        self.stats.count(entry)
        if self._file is not None:
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def since(self, seq: int = 0, platform: str | None = None) -> list[dict[str, Any]]:
        first = self._entries[0]["seq"] if self._entries else 0
        start = max(0, seq - first + 1)
        items = list(self._entries)[start:] if seq >= first else list(self._entries)
        return [e for e in items if platform is None or e.get("platform") == platform]

    @property
    def last_seq(self) -> int:
        return self._seq

    def clear(self) -> None:
        self._entries.clear()
        self.stats = Stats()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Stats:
    """Counters for ``GET /control/stats``."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.rate_limited: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.faults: collections.Counter[str] = collections.Counter()
        # Discord bans an IP at 10,000 invalid requests (401, 403, 429 except "shared")
        # in 10 minutes; benchmarks report how close they came.
        self.discord_invalid: collections.deque[float] = collections.deque()
        self.discord_invalid_total = 0
        self.messages_created: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def count(self, entry: dict[str, Any]) -> None:
        platform = str(entry.get("platform"))
        self.requests[platform] += 1
        self.statuses[f"{platform}:{entry.get('status')}"] += 1
        if entry.get("rate_limited"):
            self.rate_limited[platform][str(entry.get("scope") or "unknown")] += 1
        if entry.get("fault"):
            self.faults[f"{platform}:{entry['fault']}"] += 1
        status = entry.get("status")
        if platform == "discord" and (
            status in (401, 403) or (status == 429 and "shared" not in str(entry.get("scope")))
        ):
            self.discord_invalid_total += 1
            self.discord_invalid.append(float(entry.get("time", 0.0)))

    def message_created(self, platform: str, target: int) -> None:
        self.messages_created[platform][str(target)] += 1

    def to_dict(self) -> dict[str, Any]:
        horizon = time.time() - 600
        while self.discord_invalid and self.discord_invalid[0] < horizon:
            self.discord_invalid.popleft()
        return {
            "discord_invalid_requests": {
                "total": self.discord_invalid_total,
                "last_10_minutes": len(self.discord_invalid),
                "ban_threshold": 10_000,
            },
            "since": self.started,
            "requests": dict(self.requests),
            "requests_total": sum(self.requests.values()),
            "statuses": dict(self.statuses),
            "rate_limited": {k: dict(v) for k, v in self.rate_limited.items()},
            "rate_limited_total": sum(sum(v.values()) for v in self.rate_limited.values()),
            "faults": dict(self.faults),
            "messages_created": {k: dict(v) for k, v in self.messages_created.items()},
            "messages_created_total": {
                k: sum(v.values()) for k, v in self.messages_created.items()
            },
        }
