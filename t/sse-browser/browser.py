#!/usr/bin/env python3
"""Drives t/sse-browser/page.html in headless Chromium (Selenium) for
t/sse-browser.t. Serves this directory (the page and the npm packages) on a
free loopback port, a different origin from the gateway, so CORS is part of
the test. Reads commands on stdin, one per line, answers one JSON line each:
  load                -> {"ready":bool,"value":bool,"errors":[...]}
  wait <n> <secs>     -> waits for n configuration changes: {"changes":[...],"value":bool}
  fresh <secs> <left> -> waits until a stream is open whose token has <left>
                         seconds to live at least: the page state
  next <secs>         -> waits until a stream other than the one open now
                         is open (the token expired, the page reconnected)
  trace               -> {"sse":[{"at","id"}...],"fetch":[{"start","end","status","url"}...]}
                         (page.html's timestamps, for bench/sse.pl)
  quit
Usage: browser.py <gateway URL> <client key> <flag>
"""
import functools
import http.server
import json
import re
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
  done({ ready: tm.ready, value: tm.value, changes: tm.changes, errors: tm.errors, streams: tm.streams });
};
if (tm.changes.length >= n) return answer();
const timer = setTimeout(answer, ms);
tm.notify = () => { if (tm.changes.length >= n) { clearTimeout(timer); answer(); } };
"""


def state(drv):
    return drv.execute_script("return window.tm || null;")


def token_expiry(url):
    m = re.search(r"[?&]token=(\d+)\.", url)
    return int(m.group(1)) if m else 0


def open_stream(st):
    live = [s for s in (st or {}).get("streams", []) if s["open"] and not s["closed"]]
    return live[-1] if live else None


def wait_for(drv, secs, cond):
    end = time.time() + secs
    st = state(drv)
    while time.time() < end and not cond(st):
        time.sleep(0.02)
        st = state(drv)
    if not cond(st):
        st["console"] = [e["message"] for e in drv.get_log("browser")][-10:]
        st["timeout"] = True
    return st


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
            elif cmd[0] == "fresh":
                secs, left = float(cmd[1]), float(cmd[2])
                st = wait_for(drv, secs, lambda st: open_stream(st) is not None
                              and token_expiry(open_stream(st)["url"]) - time.time() >= left)
                print(json.dumps(st), flush=True)
            elif cmd[0] == "next":
                now = open_stream(state(drv))
                url = now["url"] if now else ""
                st = wait_for(drv, float(cmd[1]), lambda st: open_stream(st) is not None
                              and open_stream(st)["url"] != url)
                st["was"] = url
                print(json.dumps(st), flush=True)
    finally:
        drv.quit()


if __name__ == "__main__":
    main()
