"""The host side of tests/linux/net, run inside the test's network namespace
(`ip netns exec NS python3 hostserv.py ...`); every wait is bounded.

  hostserv.py http DIR PORT [ADDR]
                                serve DIR over HTTP on ADDR (127.0.0.1):PORT;
                                prints "ready" once listening
  hostserv.py sink PORT         on 127.0.0.1:PORT, per connection: read to end
                                of file, answer "SHA256HEX LENGTH SECONDS\\n"
  hostserv.py get URL SECONDS   GET URL, retrying until it answers or SECONDS
                                pass; prints the body
"""
import functools
import hashlib
import http.server
import socket
import socketserver
import sys
import time
import urllib.request


class Sink(socketserver.StreamRequestHandler):
    def handle(self):
        h, n, t0 = hashlib.sha256(), 0, time.monotonic()
        while True:
            b = self.request.recv(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        self.wfile.write(b"%s %d %.3f\n" % (h.hexdigest().encode(), n, time.monotonic() - t0))


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv):
    if argv[0] == "http":
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=argv[1])
        srv = Server((argv[3] if len(argv) > 3 else "127.0.0.1", int(argv[2])), handler)
    elif argv[0] == "sink":
        srv = Server(("127.0.0.1", int(argv[1])), Sink)
    else:
        deadline = time.monotonic() + float(argv[2])
        while True:
            try:
                sys.stdout.buffer.write(urllib.request.urlopen(argv[1], timeout=30).read())
                return 0
            except (OSError, socket.timeout) as e:
                if time.monotonic() > deadline:
                    print("hostserv: %s: %s" % (argv[1], e), file=sys.stderr)
                    return 1
                time.sleep(0.5)
    print("ready", flush=True)
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
