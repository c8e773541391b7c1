"""CommandRouter: role checks, retries, CMD_ACK matching, timeout, idempotency."""

from __future__ import annotations

import asyncio

from gateway.commands import CommandRequest, CommandResult, CommandRouter, CommandStatus

ROLES = {1001: "streetlight", 2001: "medical"}


class FakeLink:
    """Records CMD frames; a stand-in for the agent's cewire sender, exercised by the agent tests for real."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[tuple[int, int]] = []
        self.fail_first = fail_first

    async def send_command(self, request: CommandRequest, token: int) -> None:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise LookupError("node sl-1 has no link")
        self.sent.append((request.node_id, token))


async def test_ack_ends_the_command_with_the_nodes_status() -> None:
    link = FakeLink()
    router = CommandRouter(link, ROLES.get, retry_s=0.05)
    seen: list[CommandResult] = []
    router.add_listener(seen.append)
    task = asyncio.create_task(router.submit(CommandRequest("c1", 1001, "override", {"level": 400})))
    await asyncio.sleep(0.01)
    _node, token = link.sent[0]
    assert router.on_ack(1001, token + 1, "ok") is False  # wrong token is not taken
    assert router.on_ack(1001, token, "ok", {"level": 400}) is True
    result = await task
    assert result.status is CommandStatus.OK and result.result == {"level": 400}
    assert seen == [result]
    # the same command id again: the earlier result, nothing sent
    again = await router.submit(CommandRequest("c1", 1001, "override", {"level": 400}))
    assert again is result and len(link.sent) == 1


async def test_resends_until_timeout_and_reports_link_errors() -> None:
    link = FakeLink(fail_first=2)
    router = CommandRouter(link, ROLES.get, retry_s=0.02)
    result = await router.submit(CommandRequest("c2", 1001, "ping", timeout_s=0.15))
    assert result.status is CommandStatus.TIMEOUT
    assert result.attempts >= 4 and len(link.sent) == result.attempts - 2
    assert len({t for _, t in link.sent}) == 1  # resends keep the token so the node can drop repeats
    assert router.in_flight == 0


async def test_role_and_name_checks() -> None:
    router = CommandRouter(FakeLink(), ROLES.get)
    r = await router.submit(CommandRequest("c3", 2001, "boost", {"level": 1}))
    assert r.status is CommandStatus.INVALID and "not for a medical node" in r.detail
    r = await router.submit(CommandRequest("c4", 999, "ping"))
    assert r.status is CommandStatus.UNKNOWN_NODE
    r = await router.submit(CommandRequest("c5", 1001, "selfdestruct"))
    assert r.status is CommandStatus.INVALID
    assert router.counts["invalid"] == 2 and router.counts["unknown_node"] == 1


async def test_node_rejection_is_final() -> None:
    link = FakeLink()
    router = CommandRouter(link, ROLES.get, retry_s=0.05)
    task = asyncio.create_task(router.submit(CommandRequest("c6", 2001, "set_limits", {"spo2_low": 10})))
    await asyncio.sleep(0.01)
    router.on_ack(2001, link.sent[0][1], "rejected")
    r = await task
    assert r.status is CommandStatus.REJECTED and r.as_dict()["status"] == "rejected"
