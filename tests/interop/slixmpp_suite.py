"""Interop suite: a stock XMPP client (slixmpp 1.17) against casebook's chat node.

Run by `.ci/run` (which creates the virtualenv and starts `casebook up`); by hand:
    INTEROP_XMPP_PORT=15222 python tests/interop/slixmpp_suite.py
with alice@localhost, bob@localhost and carol@localhost (password "pw") added by
`casebook whatsapp add-user`. Prints one line per case and a closing
"N passed, M failed" line; exits non-zero if any case failed.
"""

import asyncio
import os
import sys
import time
import uuid

import slixmpp

HOST = "127.0.0.1"
PORT = int(os.environ.get("INTEROP_XMPP_PORT", "5222"))
TIMEOUT = 15.0
# Resources unique to this run, so sessions of an earlier run never collide.
RUN = uuid.uuid4().hex[:8]


class Client(slixmpp.ClientXMPP):
    """A slixmpp client on a plaintext localhost stream (SCRAM allowed unencrypted)."""

    def __init__(self, jid, password):
        super().__init__(
            jid,
            password,
            plugin_config={"feature_mechanisms": {"unencrypted_scram": True}},
        )
        self.enable_plaintext = True
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0030")
        self.started = asyncio.Event()
        self.auth_failed = asyncio.Event()
        self.messages = asyncio.Queue()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_all_auth", lambda _e: self.auth_failed.set())
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))

    async def _on_start(self, _event):
        self.send_presence()
        self.started.set()

    async def online(self):
        self.connect(host=HOST, port=PORT)
        await asyncio.wait_for(self.started.wait(), TIMEOUT)
        return self

    async def next_message(self):
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def leave(self):
        # Resolves once the server has closed its side of the stream too.
        await asyncio.wait_for(self.disconnect(), TIMEOUT)


async def case_login_and_ping():
    alice = await Client(f"alice@localhost/ping-{RUN}", "pw").online()
    try:
        assert str(alice.boundjid) == f"alice@localhost/ping-{RUN}", alice.boundjid
        await alice.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)
        features = info["disco_info"]["features"]
        assert "urn:xmpp:ping" in features, features
    finally:
        await alice.leave()


async def case_wrong_password_refused():
    mallory = Client("alice@localhost/wrong", "not-the-password")
    mallory.connect(host=HOST, port=PORT)
    try:
        await asyncio.wait_for(mallory.auth_failed.wait(), TIMEOUT)
        assert not mallory.started.is_set(), "a wrong password must not open a session"
    finally:
        await mallory.leave()


async def case_online_message_and_spoofed_from():
    alice = await Client(f"alice@localhost/a-{RUN}", "pw").online()
    bob = await Client(f"bob@localhost/b-{RUN}", "pw").online()
    try:
        alice.send_message(mto=bob.boundjid.full, mbody="hello bob", mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == "hello bob", msg
        assert msg["from"] == alice.boundjid, msg["from"]
        spoof = alice.make_message(mto=bob.boundjid.full, mbody="spoofed", mtype="chat")
        spoof["from"] = bob.boundjid.full
        spoof.send()
        msg = await bob.next_message()
        assert msg["body"] == "spoofed", msg
        assert msg["from"] == alice.boundjid, "the server stamps the real sender"
    finally:
        await alice.leave()
        await bob.leave()


async def case_offline_message_with_delay_stamp():
    # carol never logs in before this case: nothing of hers can still be online.
    alice = await Client(f"alice@localhost/o-{RUN}", "pw").online()
    try:
        body = f"while you were away {time.time()}"
        alice.send_message(mto="carol@localhost", mbody=body, mtype="chat")
        # Round-trip a ping so the message has surely reached the server first.
        await alice.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
    finally:
        await alice.leave()
    carol = await Client(f"carol@localhost/c-{RUN}", "pw").online()
    try:
        msg = await carol.next_message()
        assert msg["body"] == body, msg
        assert msg["from"].bare == "alice@localhost", msg["from"]
        delay = msg.xml.find("{urn:xmpp:delay}delay")
        assert delay is not None and delay.get("stamp"), "offline delivery carries a delay stamp"
    finally:
        await carol.leave()


class SmClient(Client):
    """A client with XEP-0198 stream management (slixmpp's xep_0198, resumable)."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.register_plugin("xep_0198")
        self.resumed = asyncio.Event()
        self.add_event_handler("session_resumed", lambda _e: self.resumed.set())
        self.enabled = asyncio.Event()
        self.add_event_handler("sm_enabled", lambda _e: self.enabled.set())

    async def online(self):
        await super().online()
        await asyncio.wait_for(self.enabled.wait(), TIMEOUT)
        return self

    @property
    def sm(self):
        return self.plugin["xep_0198"]

    async def all_acked(self):
        """Asks for an ack until the server acknowledged everything we sent."""
        deadline = time.monotonic() + TIMEOUT
        while self.sm.unacked_queue:
            assert time.monotonic() < deadline, f"unacked: {len(self.sm.unacked_queue)}"
            self.sm.request_ack()
            await asyncio.sleep(0.05)


async def case_stream_management_acks_and_resumption():
    alice = await SmClient(f"alice@localhost/sm-{RUN}", "pw").online()
    bob = await SmClient(f"bob@localhost/sm-{RUN}", "pw").online()
    try:
        assert alice.sm.enabled_out and bob.sm.sm_id, "SM enabled with a resumption id"
        for n in range(5):
            alice.send_message(mto="bob@localhost", mbody=f"sm {n} {RUN}", mtype="chat")
        await alice.all_acked()
        bodies = [(await bob.next_message())["body"] for _ in range(5)]
        assert bodies == [f"sm {n} {RUN}" for n in range(5)], bodies
        await bob.all_acked()
        # The server counted what bob handled: its acks never ran ahead.
        assert bob.sm.handled >= 5, bob.sm.handled

        # Bob's socket dies without </stream>; a message arrives meanwhile; bob
        # reconnects and resumes the same session, and gets it.
        bob.abort()
        body = f"while detached {RUN}"
        alice.send_message(mto=f"bob@localhost/sm-{RUN}", mbody=body, mtype="chat")
        await alice.all_acked()
        bob.connect(host=HOST, port=PORT)
        await asyncio.wait_for(bob.resumed.wait(), TIMEOUT)
        msg = await bob.next_message()
        assert msg["body"] == body, msg
    finally:
        await alice.leave()
        await bob.leave()


# The refused login runs last: the server's failed-login limiter counts it against
# this address, and must not be what the other cases measure.
CASES = [
    case_login_and_ping,
    case_online_message_and_spoofed_from,
    case_offline_message_with_delay_stamp,
    case_stream_management_acks_and_resumption,
    case_wrong_password_refused,
]


async def run_cases(cases):
    """Runs every case, one line each, then "N passed, M failed"; returns M. Shared
    by the other suites of this folder."""
    passed = failed = 0
    for case in cases:
        try:
            await case()
            passed += 1
            print(f"ok     {case.__name__}")
        except Exception as err:  # report every case, then fail the run
            failed += 1
            print(f"FAILED {case.__name__}: {type(err).__name__}: {err}")
    print(f"{passed} passed, {failed} failed")
    return failed


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(run_cases(CASES)) else 0)
