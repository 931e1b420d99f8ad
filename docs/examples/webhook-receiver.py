# A webhook receiver: checks X-ToggleMaster-Signature (HMAC-SHA256 of
# t + "." + body under the endpoint's secret), refuses a timestamp more
# than 5 minutes off (replay), and prints each change once, deduplicated on
# X-ToggleMaster-Delivery (delivery is at-least-once). Standard library only;
# keep `seen` in your database in production. t/tmctl-webhooks.t runs it.
#   WEBHOOK_SECRET=a-long-random-secret python3 webhook-receiver.py 9000
import hashlib, hmac, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET, seen = os.environ["WEBHOOK_SECRET"].encode(), set()

class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            sig = dict(p.split("=", 1) for p in self.headers["X-ToggleMaster-Signature"].split(","))
            want = hmac.new(SECRET, sig["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(want, sig["v1"]) and abs(time.time() - int(sig["t"])) <= 300
        except (AttributeError, KeyError, TypeError, ValueError):   # no or malformed header
            ok = False
        if not ok:
            self.send_response(401); self.end_headers(); return
        if self.headers["X-ToggleMaster-Delivery"] not in seen:
            seen.add(self.headers["X-ToggleMaster-Delivery"])
            print(body.decode(), flush=True)
        self.send_response(204); self.end_headers()

    def log_message(self, *args):   # stdout carries only the changes
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 9000), Hook).serve_forever()
