"""Two stock XMPP clients (slixmpp) chat through `casebook up`'s chat node.

bob logs in and waits; alice logs in, sends him one message and waits for his
answer; each prints what it receives. Run from the README's chat tour:

    python3 docs/tour/chat.py
"""

import asyncio
import sys

import slixmpp

SERVER = ("127.0.0.1", 5222)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        # The node offers STARTTLS with a self-signed certificate.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = __import__("ssl").CERT_NONE
        self.got = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)

    async def start(self, _event):
        self.send_presence()
        await self.get_roster()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            print(f"{self.boundjid.bare} got from {msg['from']}: {msg['body']}")
            if not self.got.done():
                self.got.set_result(msg)


async def main():
    bob = Client("bob@localhost/phone", "bob-pw")
    alice = Client("alice@localhost/laptop", "alice-pw")
    bob_online = asyncio.get_event_loop().create_future()
    bob.add_event_handler("session_start", lambda _e: bob_online.set_result(True))
    bob.connect(SERVER)
    await asyncio.wait_for(bob_online, 10)
    alice.connect(SERVER)
    await asyncio.wait_for(alice.wait_until("session_start"), 10)
    alice.send_message(mto="bob@localhost", mbody="hi bob, it's alice", mtype="chat")
    asked = await asyncio.wait_for(bob.got, 10)
    bob.send_message(mto=asked["from"], mbody="hi alice!", mtype="chat")
    await asyncio.wait_for(alice.got, 10)
    for client in (alice, bob):
        client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
