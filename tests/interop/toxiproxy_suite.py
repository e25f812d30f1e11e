"""toxiproxy-python against casebook's Toxiproxy-compatible API.

Usage: toxiproxy_suite.py API_PORT RESP_PORT CONTROL_URL

Through the stock client only (its Toxiproxy, Proxy and exceptions): create a proxy
in front of uber's RESP port, check a PING passes, add a latency toxic (the answer
comes no sooner than the latency), remove it, add a timeout toxic (no answer, the
connection is closed), remove it, take the proxy down and up, check the client's
errors for a duplicate proxy and a duplicate toxic, reset, destroy. Between them,
the control plane's discovery answer for the RESP service names the proxy while it
has a toxic, and the instance's own address otherwise. Exits non-zero on the first
failed check, naming it.
"""

import json
import socket
import sys
import time
import urllib.request

from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

API_PORT, RESP_PORT, CONTROL = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
RESP_ADDRESS = f"127.0.0.1:{RESP_PORT}"
PING = b"*1\r\n$4\r\nPING\r\n"
PONG = b"+PONG\r\n"
CHECKS = 0


def check(condition, what):
    global CHECKS
    if not condition:
        print(f"FAILED: {what}")
        sys.exit(1)
    CHECKS += 1
    print(f"ok: {what}")


def wait_for(port, what):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    check(False, f"{what} listens on {port}")


def ping(address, timeout=10.0):
    """PING over a fresh connection: the bytes answered before the end or timeout."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(PING)
        answer = b""
        while not answer.endswith(b"\r\n"):
            chunk = conn.recv(64)
            if not chunk:
                break
            answer += chunk
        return answer


def discovery(path):
    with urllib.request.urlopen(f"{CONTROL}/api/discovery{path}", timeout=10) as answer:
        return json.load(answer)


def resp_instance(service):
    """The discovery answer for the instance registered at RESP_ADDRESS."""
    for view in discovery(f"/apps/{service}")["instances"]:
        registered = view["metadata"].get("proxied_from", view["instance"]["address"])
        if registered == RESP_ADDRESS:
            return view["instance"]["address"], view["metadata"].get("proxied_by")
    return None


wait_for(RESP_PORT, "uber's RESP port")
RESP_SERVICE = None
for _ in range(300):
    RESP_SERVICE = next((name for name, views in discovery("/apps")["services"].items()
                         if any(v["instance"]["address"] == RESP_ADDRESS for v in views)), None)
    if RESP_SERVICE:
        break
    time.sleep(0.1)
check(RESP_SERVICE is not None, f"the RESP port is registered ({RESP_SERVICE})")
server = Toxiproxy()
server.update_api_consumer("127.0.0.1", API_PORT)
check(server.running(), "the API accepts connections")
version = server.version()
check(version is not None and b"version" in version, f"GET /version answers ({version!r})")

server.destroy_all()
check(server.proxies() == {}, "no proxies at start")

proxy = server.create(upstream=f"127.0.0.1:{RESP_PORT}", name="uber_resp")
check(proxy.listen.startswith("127.0.0.1:") and not proxy.listen.endswith(":0"),
      f"the proxy listens on a bound address ({proxy.listen})")
check(proxy.enabled, "a new proxy is enabled")
check(set(server.proxies()) == {"uber_resp"}, "GET /proxies lists it")
check(ping(proxy.listen) == PONG, "PING passes through the proxy")
check(resp_instance(RESP_SERVICE) == (RESP_ADDRESS, None),
      "without toxics discovery answers the instance's own address")

try:
    server.create(upstream=f"127.0.0.1:{RESP_PORT}", name="uber_resp")
    check(False, "a duplicate proxy is refused")
except ProxyExists:
    check(True, "a duplicate proxy is refused (ProxyExists)")

# Latency: the answer comes no sooner than the toxic's latency.
proxy.add_toxic(type="latency", attributes={"latency": 600})
toxics = proxy.toxics()
check(list(toxics) == ["latency_downstream"], f"the toxic is listed ({list(toxics)})")
check(toxics["latency_downstream"].attributes["latency"] == 600, "its attributes read back")
start = time.monotonic()
answer = ping(proxy.listen)
elapsed = time.monotonic() - start
check(answer == PONG, "PING still answered under latency")
check(elapsed >= 0.6, f"the answer is delayed by the latency ({elapsed:.3f}s >= 0.6s)")
check(resp_instance(RESP_SERVICE) == (proxy.listen, "toxiproxy:uber_resp"),
      "with a toxic discovery answers the proxy's address, marked proxied_by")
try:
    proxy.add_toxic(type="latency", attributes={"latency": 1})
    check(False, "a duplicate toxic is refused")
except ProxyExists:
    check(True, "a duplicate toxic is refused (409)")
try:
    proxy.add_toxic(type="lag")
    check(False, "an unknown toxic type is refused")
except InvalidToxic:
    check(True, "an unknown toxic type is refused (400)")
check(proxy.destroy_toxic("latency_downstream"), "the latency toxic is removed")
check(proxy.toxics() == {}, "no toxics left")
check(resp_instance(RESP_SERVICE) == (RESP_ADDRESS, None),
      "with the toxic removed discovery answers the instance directly again")

# Timeout: no data arrives and the connection is closed.
proxy.add_toxic(type="timeout", attributes={"timeout": 300})
check(ping(proxy.listen) == b"", "under a timeout toxic no answer arrives and the connection closes")
check(proxy.destroy_toxic("timeout_downstream"), "the timeout toxic is removed")
check(ping(proxy.listen) == PONG, "PING passes again")

# Down and up: nothing listens while down.
with proxy.down():
    try:
        ping(proxy.listen, timeout=2.0)
        check(False, "a disabled proxy refuses connections")
    except OSError:
        check(True, "a disabled proxy refuses connections")
check(ping(proxy.listen) == PONG, "PING passes after the proxy is up again")

proxy.add_toxic(type="bandwidth", stream="upstream", name="slow_up", attributes={"rate": 1})
check(server.reset(), "POST /reset answers")
check(proxy.toxics() == {}, "reset removed every toxic")

check(server.get_proxy("nope") is None, "an unknown proxy is absent")
try:
    APIConsumer.get("/proxies/nope")
    check(False, "an unknown proxy is a 404")
except NotFound:
    check(True, "an unknown proxy is a 404 (NotFound)")

check(proxy.destroy(), "the proxy is destroyed")
check(server.proxies() == {}, "no proxies at the end")
print(f"toxiproxy-python: {CHECKS} checks passed")
