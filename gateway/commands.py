"""Commands to nodes: what the operations center (or a local rule) asks, and what finally happened.

The flow is::

    uplink / vision rule ──CommandRequest──► CommandRouter.submit() ──CMD frame──► node
                                                                  ◄─CMD_ACK────
    uplink ◄──CommandResult (final status) ──┘

:class:`CommandRouter` owns the bookkeeping: it checks the command against the node's role, gives each
command a per-node token the node echoes in its CMD_ACK, resends the command while no ack has come — each
attempt a newly signed CMD frame with a fresh seq, same token and content (``Downlink.send_command``,
docs/protocol.md §7.5); the node runs a token once — and ends every request with exactly one final
:class:`CommandResult` — ``ok``, ``rejected``, ``failed``, ``timeout``, ``unknown_node`` or ``invalid``.
A request whose ``command_id`` was already seen returns the earlier result (the uplink is at-least-once).

How a CMD frame is built and written to a link is not this module's business: the agent gives the router a
:class:`CommandSender` (it signs with the node's key through ``cewire`` and writes to the node's link).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


class CommandStatus(enum.StrEnum):
    """Where a command stands. Only the final ones end a request."""

    PENDING = "pending"  # accepted by the gateway, not yet written to the node's link
    SENT = "sent"  # CMD frame written at least once, waiting for CMD_ACK
    OK = "ok"  # the node executed it
    REJECTED = "rejected"  # the node refused it (bad arguments, not allowed in its state)
    FAILED = "failed"  # the node tried and failed, or the link could not take the frame
    TIMEOUT = "timeout"  # no CMD_ACK before the deadline
    UNKNOWN_NODE = "unknown_node"  # not in the registry
    INVALID = "invalid"  # unknown command or wrong arguments for the node's role

    @property
    def final(self) -> bool:
        return self not in (CommandStatus.PENDING, CommandStatus.SENT)


# command name -> roles that accept it (node roles from the provisioning manifest). These are the
# operations the node apps implement (firmware/apps/*/app.py ``on_cmd``); arguments are checked by the node,
# which answers ``rejected`` with a reason when they are wrong.
COMMANDS: Mapping[str, frozenset[str]] = {
    "ping": frozenset({"streetlight", "medical"}),
    "reboot": frozenset({"streetlight", "medical"}),
    "override": frozenset({"streetlight"}),  # args: level (0.1 %), duration (s), kind (manual/boost/maintenance)
    "boost": frozenset({"streetlight"}),  # args: level (0.1 %), duration (s)
    "test": frozenset({"streetlight"}),  # maintenance test light: level, duration
    "override_end": frozenset({"streetlight"}),  # args: kind
    "program": frozenset({"streetlight"}),  # args: programs, calendar, holidays (dimming programs)
    "config": frozenset({"streetlight"}),  # args: settings to change
    "set_profile": frozenset({"medical"}),  # args: profile (adult, child, newborn)
    "set_limits": frozenset({"medical"}),  # args: alarm limits to override (spo2_low, pr_low, pr_high, ...)
    "ack": frozenset({"medical"}),  # acknowledge an alarm
    "pause_audio": frozenset({"medical"}),  # audio pause with a time limit
}

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRY_S = 1.0


@dataclass(frozen=True)
class CommandRequest:
    """One command for one node.

    ``command_id`` is chosen by whoever issues the command (the operations center's id, or
    ``local-...`` for the gateway's own rules) and makes the request idempotent.
    """

    command_id: str
    node_id: int  # the node's u32 id (frames, manifest)
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    source: str = "ops"  # "ops" (uplink), "local" (a gateway rule such as adaptive lighting), "cli"
    issued_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class CommandResult:
    """The final (or intermediate) status of a :class:`CommandRequest`."""

    command_id: str
    node_id: int
    name: str
    status: CommandStatus
    detail: str = ""
    result: Mapping[str, Any] | None = None  # what the node returned in its CMD_ACK, if anything
    attempts: int = 0
    latency_ms: float | None = None
    finished_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict for JSON/CBOR encoding upstream."""
        out: dict[str, Any] = {
            "command_id": self.command_id,
            "node_id": self.node_id,
            "name": self.name,
            "status": self.status.value,
            "attempts": self.attempts,
            "ts": self.finished_at,
        }
        if self.detail:
            out["detail"] = self.detail
        if self.result is not None:
            out["result"] = dict(self.result)
        if self.latency_ms is not None:
            out["latency_ms"] = round(self.latency_ms, 1)
        return out


class CommandSender(Protocol):
    """Writes a CMD frame for ``request`` carrying ``token`` to the node's link.

    Raises :class:`LookupError` if the node has no usable link right now (the router retries until the
    deadline) and :class:`ValueError` if the command cannot be encoded for the node.
    """

    async def send_command(self, request: CommandRequest, token: int) -> None: ...


NodeRoleLookup = Callable[[int], str | None]  # node id -> role, None if unknown
ResultListener = Callable[[CommandResult], Awaitable[None] | None]


@dataclass
class _Pending:
    request: CommandRequest
    token: int
    started: float
    done: asyncio.Future[CommandResult]
    attempts: int = 0


class CommandRouter:
    """Routes :class:`CommandRequest` objects to nodes and ends each one with a final result.

    ``role_of`` tells the router a node's role (``None``: unknown node); ``sender`` writes CMD frames.
    Listeners added with :meth:`add_listener` receive every final result (the uplink publishes them).
    """

    def __init__(
        self,
        sender: CommandSender,
        role_of: NodeRoleLookup,
        *,
        retry_s: float = DEFAULT_RETRY_S,
        remember: int = 1024,
    ) -> None:
        self._sender = sender
        self._role_of = role_of
        self._retry_s = retry_s
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._by_id: dict[str, _Pending] = {}
        self._finished: OrderedDict[str, CommandResult] = OrderedDict()
        self._remember = remember
        self._tokens: dict[int, itertools.count[int]] = {}
        self._listeners: list[ResultListener] = []
        self.counts: dict[str, int] = {s.value: 0 for s in CommandStatus if s.final}

    def add_listener(self, listener: ResultListener) -> None:
        """Call ``listener(result)`` with every final result (sync or async callables)."""
        self._listeners.append(listener)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _next_token(self, node_id: int) -> int:
        # Tokens are 1..65535 per node, so they fit the CMD frame's 16-bit field. They start from the
        # wall clock so a restarted gateway does not reuse a token a node just saw.
        counter = self._tokens.get(node_id)
        if counter is None:
            counter = self._tokens[node_id] = itertools.count(int(time.time() * 10) % 60000 + 1)
        return (next(counter) - 1) % 65535 + 1

    def check(self, request: CommandRequest) -> CommandResult | None:
        """Return an ``unknown_node``/``invalid`` result if the request cannot go to the node, else None."""
        role = self._role_of(request.node_id)
        if role is None:
            return self._result(request, CommandStatus.UNKNOWN_NODE, f"node {request.node_id!r} is not registered")
        roles = COMMANDS.get(request.name)
        if roles is None:
            known = ", ".join(sorted(COMMANDS))
            return self._result(request, CommandStatus.INVALID, f"unknown command {request.name!r} (known: {known})")
        if role not in roles:
            return self._result(
                request, CommandStatus.INVALID, f"command {request.name!r} is not for a {role} node"
            )
        if not (0 < request.timeout_s <= 3600):
            return self._result(request, CommandStatus.INVALID, f"timeout_s {request.timeout_s} out of 0..3600")
        return None

    async def submit(self, request: CommandRequest) -> CommandResult:
        """Send ``request`` to its node and wait for the final result (never raises for node trouble)."""
        earlier = self._finished.get(request.command_id)
        if earlier is not None:
            return earlier
        running = self._by_id.get(request.command_id)
        if running is not None:
            return await asyncio.shield(running.done)
        bad = self.check(request)
        if bad is not None:
            await self._finish(bad)
            return bad
        loop = asyncio.get_running_loop()
        pending = _Pending(request, self._next_token(request.node_id), loop.time(), loop.create_future())
        self._pending[(request.node_id, pending.token)] = pending
        self._by_id[request.command_id] = pending
        try:
            result = await self._drive(pending)
        finally:
            self._pending.pop((request.node_id, pending.token), None)
            self._by_id.pop(request.command_id, None)
            done = getattr(self._sender, "command_done", None)  # lets the sender drop a cached frame
            if done is not None:
                done(request.node_id, pending.token)
        await self._finish(result)
        return result

    async def _drive(self, p: _Pending) -> CommandResult:
        loop = asyncio.get_running_loop()
        deadline = p.started + p.request.timeout_s
        last_error = ""
        while True:
            now = loop.time()
            if now >= deadline:
                detail = f"no CMD_ACK within {p.request.timeout_s:g} s"
                if last_error:
                    detail += f" (last send error: {last_error})"
                return self._result(p.request, CommandStatus.TIMEOUT, detail, attempts=p.attempts)
            try:
                p.attempts += 1
                await self._sender.send_command(p.request, p.token)
                last_error = ""
            except LookupError as exc:  # no link to the node right now: keep trying until the deadline
                last_error = str(exc)
            except ValueError as exc:
                return self._result(p.request, CommandStatus.INVALID, str(exc), attempts=p.attempts)
            except OSError as exc:
                last_error = f"link error: {exc}"
            wait = min(self._retry_s, max(0.0, deadline - loop.time()))
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(p.done), wait)

    def on_ack(self, node_id: int, token: int, status: str, result: Mapping[str, Any] | None = None) -> bool:
        """Feed a verified CMD_ACK from a node. ``status`` is the node's word: ok, rejected or failed.

        Returns False if no command with that token is waiting (a late or repeated ack).
        """
        p = self._pending.get((node_id, token))
        if p is None or p.done.done():
            return False
        try:
            st = CommandStatus(status)
        except ValueError:
            st = CommandStatus.FAILED
        if not st.final or st in (CommandStatus.UNKNOWN_NODE, CommandStatus.TIMEOUT):
            st = CommandStatus.FAILED
        latency = (asyncio.get_running_loop().time() - p.started) * 1000.0
        detail = "" if st is CommandStatus.OK else f"node answered {status}"
        p.done.set_result(
            self._result(p.request, st, detail, result=result, attempts=p.attempts, latency_ms=latency)
        )
        return True

    def _result(
        self,
        request: CommandRequest,
        status: CommandStatus,
        detail: str = "",
        *,
        result: Mapping[str, Any] | None = None,
        attempts: int = 0,
        latency_ms: float | None = None,
    ) -> CommandResult:
        return CommandResult(
            request.command_id, request.node_id, request.name, status, detail, result, attempts, latency_ms
        )

    async def _finish(self, result: CommandResult) -> None:
        self._finished[result.command_id] = result
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)
        self.counts[result.status.value] = self.counts.get(result.status.value, 0) + 1
        log.info("command %s %s -> %s: %s", result.command_id, result.name, result.node_id, result.status.value)
        for listener in self._listeners:
            try:
                maybe = listener(result)
                if maybe is not None:
                    await maybe
            except Exception:  # a listener's failure must not lose the result for the others
                log.exception("command result listener failed")
