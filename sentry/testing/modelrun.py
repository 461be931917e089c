"""The model-based wire test's driver: a run of steps against a gateway and the model.

Approach. A run is a ``Config`` (OAuth on or off, the file's preferences) and
a list of ``Step`` values drawn by Hypothesis (``sentry.testing.modelsteps``:
EAS requests in every spelling, admin actions on rows, preference changes,
compliance flips, label pushes, backend-type resets and restarts of the
gateway on the same SQLite file). ``run`` starts the ``World`` of
``sentry.testing.modelworld`` (strict recording backends, an ``exchange``
pool and a ``gmail`` pool, and a gateway in front of them in ``root``),
seeds it with the world of ``sentry.testing.model``, and plays the steps
against the gateway and the model side by side. After each request it
compares what each backend received with the model's verdict (forwarded to
that pool, or to none) and the answer's class; after each admin step the
status class. The first difference raises ``Mismatch`` with the step and
the trace so far, which Hypothesis shrinks to a minimal sequence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import model as m
from .modelsteps import (
    SPELLINGS,
    Admin,
    Compliance,
    Config,
    Link,
    Prefs,
    Push,
    Register,
    Request,
    ResetType,
    Restart,
    Step,
    configs,
    sequences,
)
from .modelworld import World
from .oauth import TokenIssuer

__all__ = ["SUITE_PROFILE", "Mismatch", "RunStats", "run", "run_profile"]

# The bounded profile ``make test`` runs (tests/proxy/test_modeltest.py, derandomized);
# ``python -m bench modeltest`` runs it as its baseline, then the long profile.
SUITE_PROFILE = {"examples": 40, "min_steps": 10, "max_steps": 45}


# -- the run -------------------------------------------------------------------


class Mismatch(AssertionError):
    """The gateway and the model disagree."""


@dataclass
class RunStats:
    examples: int = 0
    steps: int = 0
    requests: int = 0
    forwarded: int = 0
    refused: int = 0
    restarts: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)  # request verdicts by reason
    admin: dict[str, int] = field(default_factory=dict)  # admin steps by kind and answer


def _answer_class(status: int, backend: str | None) -> str:
    if backend is not None:
        return "relayed"
    if status == 200:
        return "refuse"
    if status == 400:
        return "bad"
    if status in (401, 403):
        return "auth"
    if status == 502:
        return "redirect refused"
    if status == 503:
        return "retry"
    return f"http {status}"


class _Runner:
    def __init__(self, world: World, model: m.Model, stats: RunStats) -> None:
        self.world = world
        self.model = model
        self.stats = stats
        self.trace: list[str] = []

    def fail(self, message: str) -> None:
        trace = "\n  ".join(self.trace)
        raise Mismatch(f"{message}\nsteps so far:\n  {trace}")

    async def step(self, step: Step) -> None:
        self.stats.steps += 1
        self.trace.append(repr(step))
        if isinstance(step, Request):
            await self.request(step)
        elif isinstance(step, Restart):
            self.stats.restarts += 1
            self.model.restarted()
            for name, value in step.file_prefs:
                if name not in self.model.admin_set:
                    setattr(self.model, _PREF_ATTRS[name], value)
            await self.world.restart(step.file_prefs)
        else:
            await self.admin(step)

    async def request(self, step: Request) -> None:
        self.stats.requests += 1
        device_id = step.device_id.upper()
        who = self.model.identity(
            step.scheme, step.user, step.query_user, step.duplicate, step.good_password
        )
        verdict = who if isinstance(who, m.Verdict) else self.model.request(device_id, who)
        accepted = step.good_password  # a Bearer request forwarded had a valid token
        expected: tuple[set[str], str]
        if verdict.outcome == "forward":
            assert verdict.pool is not None and not isinstance(who, m.Verdict)
            delivery = self.model.deliver(who, verdict.pool, step.command, accepted)
            expected = (set(delivery.servers), delivery.answer)
        else:
            expected = (set(), verdict.outcome)
        before = self.world.counts()
        status, backend = await self.world.send(step)
        after = self.world.counts()
        seen = {name for name in after if after[name] != before[name]}
        got = _answer_class(status, backend)
        why = verdict.why or verdict.outcome
        self.stats.outcomes[why] = self.stats.outcomes.get(why, 0) + 1
        if seen != expected[0] or any(after[p] - before[p] > 1 for p in after):
            self.fail(
                f"backends saw {sorted(seen) or 'nothing'} ({before} -> {after}), the model says "
                f"{verdict.outcome} {sorted(expected[0])} ({verdict.why}); answer {status}"
            )
        if got != expected[1]:
            self.fail(f"answer {status} ({got}), the model says {expected[1]} ({verdict})")
        if verdict.outcome == "forward":
            self.stats.forwarded += 1
            assert not isinstance(who, m.Verdict)
            self.model.forwarded(device_id, who, accepted)
        else:
            self.stats.refused += 1
        self.trace[-1] += f"  -> {got} {sorted(seen) or verdict.why}"

    def _target(self, step: Admin) -> tuple[str, str]:
        rows = sorted(self.model.rows)
        if step.row is None or not rows:
            return step.device_id, step.user
        device_id, p = rows[step.row % len(rows)]
        names = SPELLINGS.get(p, (f"{p[0]}@{p[1]}",))
        return device_id, names[step.row % len(names)]

    async def admin(self, step: Step) -> None:
        note = {"note": "model"}
        if isinstance(step, Admin):
            device_id, user = self._target(step)
            expected = self.model.action(step.action, device_id.upper(), m.canonical(user))
            path = f"/api/associations/{quote(device_id)}/{quote(user, safe='@')}"
            status, body = await self.world.api("POST", f"{path}/{step.action}", note)
        elif isinstance(step, Link):
            expected = self.model.link(step.device_id.upper(), m.canonical(step.user), step.device)
            path = f"/api/associations/{quote(step.device_id)}/{quote(step.user, safe='@')}"
            status, body = await self.world.api(
                "POST", f"{path}/link", {"device": step.device} | note
            )
        elif isinstance(step, Register):
            ids = tuple(i.upper() for i in step.eas_ids)
            device = m.ManagedDevice("tab3", m.canonical(step.owner), "ios", ids)
            expected = self.model.register(device)
            body = {
                "id": "tab3",
                "owner": step.owner,
                "platform": "ios",
                "eas_device_ids": list(step.eas_ids),
                "note": "model",
            }
            status, body = await self.world.api("POST", "/api/devices", body)
        elif isinstance(step, Prefs):
            expected = 2
            setattr(self.model, _PREF_ATTRS[step.name], step.value)
            self.model.admin_set.add(step.name)
            status, body = await self.world.api(
                "PUT", "/api/preferences", {step.name: step.value} | note
            )
        elif isinstance(step, Compliance):
            expected = self.model.compliance(step.device, step.compliant)
            violations = [] if step.compliant else ["os_version"]
            status, body = await self.world.api(
                "PUT", f"/api/devices/{step.device}/compliance", {"violations": violations}
            )
        elif isinstance(step, Push):
            expected = self.model.push(step.device, step.label, step.add)
            change = {"add" if step.add else "remove": [step.device]}
            status, body = await self.world.api(
                "POST", f"/api/labels/{step.label}/devices", change | note
            )
        else:
            assert isinstance(step, ResetType)
            expected = self.model.reset_type(step.scope, step.backend_type)
            kind, _, name = step.scope.partition(":")
            base = "/api/devices" if kind == "device" else "/api/device-ids"
            status, body = await self.world.api(
                "POST",
                f"{base}/{name}/reset-backend-type",
                {"backend_type": step.backend_type} | note,
            )
        self.trace[-1] += f"  -> {status}"
        kind = f"{getattr(step, 'action', type(step).__name__.lower())} {status // 100}xx"
        self.stats.admin[kind] = self.stats.admin.get(kind, 0) + 1
        if status // 100 != expected:
            self.fail(f"admin answer {status} {body}, the model expects {expected}xx")


_PREF_ATTRS = {
    "auto_block_unregistered": "auto_block",
    "compliance_overrides_allow": "compliance_overrides_allow",
    "max_devices_per_mailbox": "max_devices",
    "max_mailboxes_per_device": "max_mailboxes",
}


async def run(
    root: Path,
    config: Config,
    sequence: Sequence[Step],
    issuer: TokenIssuer,
    stats: RunStats | None = None,
) -> RunStats:
    """Play ``sequence`` against a fresh gateway in ``root`` and the model; raise
    ``Mismatch`` at the first disagreement."""
    stats = stats if stats is not None else RunStats()
    started = time.perf_counter()
    model = m.Model(
        oauth=config.oauth,
        auto_block=config.auto_block,
        max_devices=config.max_devices,
        max_mailboxes=config.max_mailboxes,
        compliance_overrides_allow=config.compliance_overrides_allow,
    )
    world = World(root, config, issuer)
    try:
        await world.start()
        await world.seed()
        runner = _Runner(world, model, stats)
        runner.trace.append(repr(config))
        for step in sequence:
            await runner.step(step)
    finally:
        await world.stop()
        stats.examples += 1
        stats.seconds += time.perf_counter() - started
    return stats


def run_profile(
    root: Path,
    examples: int,
    max_steps: int,
    *,
    min_steps: int = 1,
    seed_value: int | None = None,
    derandomize: bool = False,
) -> RunStats:
    """Run ``examples`` Hypothesis examples of up to ``max_steps`` steps each,
    every one against a fresh gateway under ``root``; a mismatch raises (shrunk)."""
    from hypothesis import HealthCheck, given, seed, settings

    issuer = TokenIssuer()
    stats = RunStats()
    counter = iter(range(1 << 62))

    def one(config: Config, sequence: list[Step]) -> None:
        work = root / f"run-{next(counter)}"
        work.mkdir(parents=True)
        try:
            asyncio.run(run(work, config, sequence, issuer, stats))
        finally:
            _remove_tree(work)

    profile = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
    )
    test: Any = profile(given(configs(), sequences(min_steps, max_steps))(one))
    if seed_value is not None:
        test = seed(seed_value)(test)
    test()
    return stats


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
