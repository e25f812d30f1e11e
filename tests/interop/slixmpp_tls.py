"""Interop over TLS: slixmpp 1.17 with STARTTLS and with direct TLS (XEP-0368)
against casebook's chat node, verifying the node's certificate (the self-signed one
it generated on first start, passed as the only trusted CA).

Run by tests/interop/run-slixmpp.sh after the plaintext suite; by hand:
    INTEROP_XMPP_PORT=15222 INTEROP_XMPP_TLS_PORT=15223 \
    INTEROP_CA=casebook-data/whatsapp/localhost/tls/cert.pem python tests/interop/slixmpp_tls.py
with bob@localhost and carol@localhost (password "pw"). Prints one line per case
and a closing "N passed, M failed" line; exits non-zero if any case failed.
"""

import asyncio
import os
import sys
import uuid

import slixmpp

from slixmpp_suite import run_cases

HOST = "127.0.0.1"
PORT = int(os.environ.get("INTEROP_XMPP_PORT", "5222"))
TLS_PORT = int(os.environ.get("INTEROP_XMPP_TLS_PORT", "5223"))
CA = os.environ["INTEROP_CA"]
TIMEOUT = 15.0
RUN = uuid.uuid4().hex[:8]


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that insists on TLS: STARTTLS, or TLS from the first byte."""

    def __init__(self, jid, password, direct_tls):
        super().__init__(jid, password)
        self.enable_plaintext = False
        self.enable_starttls = not direct_tls
        self.enable_direct_tls = direct_tls
        self.ca_certs = CA
        self.register_plugin("xep_0199")
        self.started = asyncio.Event()
        self.messages = asyncio.Queue()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))

    async def _on_start(self, _event):
        self.send_presence()
        self.started.set()

    async def online(self, port):
        self.connect(host=HOST, port=port)
        await asyncio.wait_for(self.started.wait(), TIMEOUT)
        return self

    async def leave(self):
        await asyncio.wait_for(self.disconnect(), TIMEOUT)


async def case_starttls_and_direct_tls_chat():
    bob = await Client(f"bob@localhost/starttls-{RUN}", "pw", False).online(PORT)
    carol = await Client(f"carol@localhost/tls-{RUN}", "pw", True).online(TLS_PORT)
    try:
        await bob.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        await carol.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        bob.send_message(mto="carol@localhost", mbody=f"over tls {RUN}", mtype="chat")
        got = await asyncio.wait_for(carol.messages.get(), TIMEOUT)
        assert got["body"] == f"over tls {RUN}", got
        assert str(got["from"]) == f"bob@localhost/starttls-{RUN}", got["from"]
    finally:
        await bob.leave()
        await carol.leave()


CASES = [case_starttls_and_direct_tls_chat]


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(run_cases(CASES)) else 0)
