"""Guest-side network probes for tests/linux/net: the guest sees no host
files, so the tests pass these snippets' source to `python3 -c` in the guest.

PING: python3 -c PING ADDR  -- five ICMP echo requests (raw socket; the
agent runs commands as root), prints "ping=ok N" with N replies, or
"ping=failed"; each wait bounded (5 s). The echo identifier is random:
passt sends echo requests from ping sockets, whose identifiers are unique
per network namespace, so two clones using the same one at once (their
guests are copies) would have one clone's replies go nowhere.
"""

PING = r"""
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(5)
got, ident = 0, int.from_bytes(os.urandom(2), "big") | 1
for seq in range(1, 6):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"microvm-ping-payload"
    pkt = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    s.sendto(pkt, (sys.argv[1], 0))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            r = s.recv(2048)
        except socket.timeout:
            break
        icmp = r[(r[0] & 15) * 4:]
        if icmp[0] == 0 and struct.unpack("!H", icmp[6:8])[0] == seq:
            got += 1
            break
print("ping=ok %d" % got if got else "ping=failed")
"""
