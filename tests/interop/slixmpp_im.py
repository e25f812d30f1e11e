"""Interop, instant messaging: slixmpp 1.17's stock roster, carbons (XEP-0280),
receipts (XEP-0184), stanza-id (XEP-0359) and MAM (XEP-0313) plugins against the
chat node. Run by `run-slixmpp.sh` after `slixmpp_suite.py`, on the same node
(alice and bob only: carol must stay untouched for the offline case). Same output
as the main suite: one line per case, then "N passed, M failed".
"""

import asyncio
import sys

import slixmpp

from slixmpp_suite import RUN, TIMEOUT, Client, run_cases


class ImClient(Client):
    """A client that fetches the roster before its initial presence, as RFC 6121
    §2.2 suggests, with the IM plugins loaded."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        for plugin in ("xep_0184", "xep_0280", "xep_0313", "xep_0359"):
            self.register_plugin(plugin)
        # Receipts are answered by slixmpp itself; requests are added to our chats.
        self.plugin["xep_0184"].auto_request = True

    async def _on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.started.set()


async def until(predicate, what):
    for _ in range(int(TIMEOUT * 10)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def case_mutual_subscription_and_presence():
    # slixmpp accepts and returns subscription requests by default.
    alice = await ImClient(f"alice@localhost/im-{RUN}", "pw").online()
    bob = await ImClient(f"bob@localhost/im-{RUN}", "pw").online()
    try:
        alice.send_presence_subscription(pto="bob@localhost")
        await until(
            lambda: alice.client_roster["bob@localhost"]["subscription"] == "both"
            and bob.client_roster["alice@localhost"]["subscription"] == "both",
            "a mutual subscription",
        )
        await until(
            lambda: bob.boundjid.resource in alice.client_roster["bob@localhost"].resources,
            "bob's presence at alice",
        )
    finally:
        await alice.leave()
        await bob.leave()


async def case_carbons_receipts_and_mam():
    phone = await ImClient(f"alice@localhost/phone-{RUN}", "pw").online()
    desk = await ImClient(f"alice@localhost/desk-{RUN}", "pw").online()
    bob = await ImClient(f"bob@localhost/mam-{RUN}", "pw").online()
    try:
        await phone.plugin["xep_0280"].enable()
        await desk.plugin["xep_0280"].enable()
        carbons = asyncio.Queue()
        receipts = asyncio.Queue()
        desk.add_event_handler("carbon_sent", carbons.put_nowait)
        phone.add_event_handler("receipt_received", receipts.put_nowait)
        body = f"archived {RUN}"
        phone.send_message(mto="bob@localhost", mbody=body, mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == body, msg
        assert msg["stanza_id"]["by"] == "bob@localhost" and msg["stanza_id"]["id"], msg
        carbon = await asyncio.wait_for(carbons.get(), TIMEOUT)
        assert carbon["carbon_sent"]["body"] == body, carbon
        receipt = await asyncio.wait_for(receipts.get(), TIMEOUT)
        assert receipt["receipt"], receipt
        history = await phone.plugin["xep_0313"].retrieve(with_jid=slixmpp.JID("bob@localhost"))
        bodies = [r["mam_result"]["forwarded"]["stanza"]["body"] for r in history["mam"]["results"]]
        assert body in bodies, bodies
    finally:
        await phone.leave()
        await desk.leave()
        await bob.leave()


CASES = [case_mutual_subscription_and_presence, case_carbons_receipts_and_mam]


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(run_cases(CASES)) else 0)
