#!/usr/bin/env python3
"""Drives t/sse-browser/page.html in headless Chromium (Selenium) for
t/sse-browser.t. Serves this directory (the page and the npm packages) on a
free loopback port, a different origin from the gateway, so CORS is part of
the test. Reads commands on stdin, one per line, answers one JSON line each:
  load                -> {"ready":bool,"value":bool,"errors":[...]}
  wait <n> <secs>     -> waits for n configuration changes: {"changes":[...],"value":bool}
  trace               -> {"sse":[{"at","id"}...],"fetch":[{"start","end","status","url"}...]}
                         (page.html's timestamps, for bench/sse.pl)
  quit
Usage: browser.py <gateway URL> <client key> <flag>
"""
import functools
import http.server
import json
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

HERE = sys.path[0]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def serve():
    handler = functools.partial(Quiet, directory=HERE)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def browser():
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              "--disable-component-update"):
        opts.add_argument(a)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


# arguments: n, ms, done. Calls done with the page's state once it has n
# changes (page.html calls tm.notify after each) or after ms.
WAIT_JS = """
const [n, ms, done] = arguments;
const tm = window.tm;
const answer = () => {
  tm.notify = null;
  done({ ready: tm.ready, value: tm.value, changes: tm.changes, errors: tm.errors });
};
if (tm.changes.length >= n) return answer();
const timer = setTimeout(answer, ms);
tm.notify = () => { if (tm.changes.length >= n) { clearTimeout(timer); answer(); } };
"""


def state(drv):
    return drv.execute_script("return window.tm || null;")


def main():
    gw, key, flag = sys.argv[1:4]
    port = serve()
    drv = browser()
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            if cmd[0] == "load":
                drv.get(f"http://127.0.0.1:{port}/page.html?gw={gw}&key={key}&flag={flag}")
                end = time.time() + 20
                st = state(drv)
                while time.time() < end and not (st and (st["ready"] or st["errors"])):
                    time.sleep(0.05)
                    st = state(drv)
                out = st or {"ready": False, "errors": ["no page state"]}
                if not out.get("ready"):
                    out["console"] = [e["message"] for e in drv.get_log("browser")][-10:]
                print(json.dumps(out), flush=True)
            elif cmd[0] == "trace":
                print(json.dumps(drv.execute_script("return window.tmTrace;")), flush=True)
            elif cmd[0] == "wait":
                n, secs = int(cmd[1]), float(cmd[2])
                # the page answers when the change arrives: polling it here
                # every few ms took the CPU the page and the edge need, and
                # was part of what bench/sse.pl measured
                drv.set_script_timeout(secs + 5)
                st = drv.execute_async_script(WAIT_JS, n, int(secs * 1000))
                if len(st["changes"]) < n:
                    st["console"] = [e["message"] for e in drv.get_log("browser")][-10:]
                print(json.dumps(st), flush=True)
    finally:
        drv.quit()


if __name__ == "__main__":
    main()
