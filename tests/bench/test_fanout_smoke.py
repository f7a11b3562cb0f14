"""The fan-out benchmark's own code path on a small fan-out: nothing lost, nothing duplicated.

Timing belongs in ``bench/fanout.py`` and docs/BENCHMARKS.md, never in a test: this only proves
that the harness (world, approval, worker, publishers, sandbox, the lost/duplicate audit) works
and agrees with what members of each channel and chat see.
"""

from __future__ import annotations

from bench.fanout import FaultShare, run_once


async def test_small_fanout_delivers_each_message_once(database_url: str) -> None:
    result = await run_once(discord=5, telegram=5, faults="none", database_url=database_url)

    assert (result["lost"], result["duplicates"], result["uncertain"]) == (0, 0, 0)
    assert result["delivery_states"] == {"sent": 10}
    assert result["message_creates_needed"] == {"discord": 5, "telegram": 5}
    assert result["bound_seconds"] == 0.0  # 5 + 5 messages fit in the platforms' bursts
    assert result["ratio"] is None


async def test_small_fanout_under_heavy_faults_loses_and_duplicates_nothing(
    database_url: str,
) -> None:
    """Far more faults than the benchmark's plan, so that 10 destinations meet each kind: 5xx
    (retried), Discord answers lost after the message was created (the retry must reuse the
    nonce) and Telegram timeouts (uncertain for a person, by design, never lost)."""
    plan = (
        FaultShare("timeout", 0.15, after_effect=True),
        FaultShare("timeout", 0.1, after_effect=False),
        FaultShare("500", 0.2),
        FaultShare("502", 0.1),
    )
    result = await run_once(
        discord=5,
        telegram=5,
        faults=plan,
        database_url=database_url,
        seed=3,
        platform_timeout=1.0,
        settle_within=120.0,
    )

    assert result["lost"] == 0, result["lost_detail"]
    assert result["duplicates"] == 0
    injected = sum(sum(result["faults_applied"][p].values()) for p in ("discord", "telegram"))
    assert injected > 0, "the plan must actually fire for this test to mean anything"
    assert result["uncertain_by_platform"]["discord"]["total"] == 0  # nonces make it safe
    states = result["delivery_states"]
    assert set(states) <= {"sent", "uncertain"}
    assert states.get("uncertain", 0) == result["uncertain_by_platform"]["telegram"]["total"]
