#!/usr/bin/env python3
"""The admin console in headless Chromium (Debian's chromium + chromedriver,
Selenium from PyPI), against a real stack's gateway. t/console.t starts the
stack and runs this; each check is printed as one JSON line
{"ok": bool, "name": ..., "diag": ...} (or {"skip": why, "name": ...}).

  console.py GATEWAY_URL MASTER_KEY SCREENSHOT_DIR [ANALYTICS_PID]

With ANALYTICS_PID the analytics worker is stopped (SIGTERM) near the end, to
see the usage views say the service is away.

Waits are explicit (WebDriverWait on a condition), never sleeps."""
import json
import os
import re
import signal
import sys
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, MASTER, SHOTS = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
ANALYTICS_PID = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
UI = BASE + "/ui/"
WAIT = 15
FLAG = "checkout-v2"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def result(ok, name, diag=""):
    print(json.dumps({"ok": bool(ok), "name": name, "diag": str(diag)[:2000]}), flush=True)
    return ok


def skip(name, why):
    print(json.dumps({"skip": why, "name": name}), flush=True)


def http(method, path, key=None, body=None):
    """The API as a client sees it: (status, json or None, headers)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, status, headers = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, headers = e.read(), e.code, e.headers
    try:
        return status, json.loads(raw) if raw else None, headers
    except ValueError:
        return status, None, headers


def new_key(name, **extra):
    status, j, _ = http("POST", "/auth/admin/keys", MASTER, {"name": name, **extra})
    return status, (j or {})


def until(fn, timeout=WAIT):
    """fn() until truthy (the edge and the list poll take a moment)."""
    try:
        return WebDriverWait(None, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(lambda _: fn())
    except TimeoutException:
        return None


def browser():
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


class Console:
    def __init__(self, d):
        self.d = d
        # the console redraws parts of the page: an element may go stale
        self.wait = WebDriverWait(d, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        self.log = []

    def t(self, name, scope=None):
        """The element data-test=name (in scope), once visible."""
        sel = '[data-test="%s"]' % name
        if scope is not None:
            return self.wait.until(lambda _: scope.find_element(By.CSS_SELECTOR, sel))
        return self.wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, sel)))

    def all(self, name, scope=None):
        return (scope or self.d).find_elements(By.CSS_SELECTOR, '[data-test="%s"]' % name)

    def go(self, hash_):
        self.d.get(UI + hash_)

    def heading(self, text):
        self.wait.until(lambda d: d.find_element(By.TAG_NAME, "h1").text == text)

    def type(self, el, text):
        el.clear()
        el.send_keys(text)

    def confirm(self):
        self.t("confirm-ok").click()
        self.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        self.d.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def take_log(self):
        self.log += self.d.get_log("browser")

    def sign_in(self, key):
        self.go("#/signin")
        self.heading("Sign in")
        self.type(self.t("signin-key"), key)
        self.t("signin-key").submit()

    def save_rule(self):
        """Save, and wait for the page redrawn with the saved rule."""
        old = self.d.find_element(By.CSS_SELECTOR, '[data-test="flag-status"]')
        self.t("save-rule").click()
        self.wait.until(EC.staleness_of(old))
        self.wait.until(lambda _: "Rule saved" in self.t("flag-status").text)

    def sign_out(self):
        self.t("signout").click()
        self.heading("Sign in")


def flows(c, admin):
    d = c.d
    # --- the CSP and the console's own files ---
    st, _, hd = http("GET", "/ui/")
    csp = hd.get("Content-Security-Policy", "")
    result(st == 200 and "script-src 'self'" in csp and "connect-src 'self'" in csp
           and "unsafe-inline" not in csp and "default-src 'self'" in csp,
           "GET /ui/: 200 with a strict Content-Security-Policy", csp)
    st, _, hd = http("GET", "/ui/app.js")
    result(st == 200 and hd.get("Content-Type", "").startswith("text/javascript"),
           "GET /ui/app.js: a JavaScript module", hd.get("Content-Type"))

    # --- sign in ---
    c.sign_in("tm_key_" + "0" * 64)
    err = c.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-test="signin-form"] .notice.error'))
    result("not valid" in err.text, "sign in with an unknown key: refused, with the reason", err.text)
    c.sign_in(admin)
    c.heading("Flags")
    result(c.t("scope").text == "admin key", "signed in with an admin key", c.t("scope").text)
    stored = d.execute_script("return [sessionStorage.length, localStorage.length, document.cookie]")
    result(stored == [1, 0, ""], "the key is in sessionStorage only (no localStorage, no cookie)", stored)
    result(admin not in d.current_url, "the key is not in the URL", d.current_url)

    # --- create a flag (its description is markup, which must stay text) ---
    c.type(c.t("new-name"), FLAG)
    c.type(c.t("new-description"), XSS)
    c.t("create-flag").submit()
    row = c.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-flag="%s"]' % FLAG))
    st, f, _ = http("GET", "/flags/flags/" + FLAG, admin)
    result(st == 200 and f["description"] == XSS and f["is_enabled"] is False, "create a flag: stored off", f)
    desc = row.find_element(By.CSS_SELECTOR, "td.desc")
    result(desc.text == XSS and not desc.find_elements(By.TAG_NAME, "img"),
           "a description with markup is shown as text, never parsed", desc.text)

    # --- switch it on ---
    sw = c.t("switch-%s-default" % FLAG)
    sw.click()
    c.wait.until(lambda _: c.t("switch-%s-default" % FLAG).get_attribute("aria-checked") == "true")
    st, f, _ = http("GET", "/flags/flags/" + FLAG, admin)
    result(f["is_enabled"] is True, "the switch turns the flag on", f)

    # --- the list follows changes made elsewhere ---
    http("POST", "/flags/flags", admin, {"name": "made-elsewhere", "description": "by tmctl"})
    http("PUT", "/flags/flags/" + FLAG, admin, {"is_enabled": False})
    seen = until(lambda: d.find_elements(By.CSS_SELECTOR, 'tr[data-flag="made-elsewhere"]')
                 and c.t("switch-%s-default" % FLAG).get_attribute("aria-checked") == "false")
    result(seen, "the list shows another user's new flag and switch by itself")
    http("PUT", "/flags/flags/" + FLAG, admin, {"is_enabled": True})
    until(lambda: c.t("switch-%s-default" % FLAG).get_attribute("aria-checked") == "true")
    c.type(c.t("search"), "elsewhere")
    shown = until(lambda: [r.get_attribute("data-flag") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-flag]")] == ["made-elsewhere"])
    result(shown, "search narrows the list")
    c.type(c.t("search"), "")
    Select(c.t("state-filter")).select_by_value("on")
    shown = until(lambda: [r.get_attribute("data-flag") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-flag]")] == [FLAG])
    result(shown, "the state filter shows only flags that are on")
    c.shot("flags")

    # --- a strategy with a constraint ---
    c.go("#/flags/" + FLAG)
    c.heading(FLAG)
    c.t("kind-strategies").click()
    c.t("add-constraint").click()
    con = c.all("constraint")[0]
    c.type(c.t("constraint-context", con), "country")
    c.type(c.t("constraint-values", con), "BR\nPT")
    raw = json.loads(c.t("rule-json").get_attribute("value"))
    want = {"strategies": [{"constraints": [{"contextName": "country", "operator": "IN", "values": ["BR", "PT"]}]}]}
    result(raw == want, "the raw JSON follows the form", raw)
    c.save_rule()
    st, r, _ = http("GET", "/targeting/rules/" + FLAG, admin)
    result(st == 200 and r["rules"] == want and r["is_enabled"] is True, "the strategy with its constraint is saved", r)

    # --- an invalid regex: its error next to its field, nothing saved ---
    c.t("add-constraint").click()
    con = c.all("constraint")[1]
    c.type(c.t("constraint-context", con), "email")
    Select(c.t("constraint-type", con)).select_by_visible_text("Regex")
    con = c.all("constraint")[1]
    c.type(c.t("constraint-value", con), r"(a)\1")
    c.t("save-rule").click()
    err = c.t("field-error")
    path = err.get_attribute("data-error-path")
    con = c.all("constraint")[1]
    inside = con.find_elements(By.CSS_SELECTOR, '[data-test="field-error"]')
    value_in = c.t("constraint-value", con)
    result(path == "strategies[0].constraints[1].value" and inside and "backreference" in err.text.lower()
           and value_in.get_attribute("aria-invalid") == "true",
           "a backreference: the API's error is shown at the constraint's value", "%s: %s" % (path, err.text))
    st, r, _ = http("GET", "/targeting/rules/" + FLAG, admin)
    result(r["rules"] == want, "the invalid rule saved nothing", r)
    c.shot("rule-error")

    # the raw JSON side: edit it, the form follows
    c.t("kind-strategies")  # still there
    doc = {"strategies": [{"constraints": [{"contextName": "country", "operator": "IN", "values": ["BR", "PT"]}],
                           "rollout": {"percentage": 100, "stickiness": "default"}}],
           "variants": [{"name": "blue", "weight": 1000, "payload": {"type": "string", "value": "#00f"}}]}
    js = c.t("rule-json")
    js.clear()
    js.send_keys(json.dumps(doc))
    pct = c.t("rollout-percentage")
    result(pct.get_attribute("value") == "100" and c.t("variant-name").get_attribute("value") == "blue"
           and not c.all("field-error"), "the form follows the raw JSON (rollout, variant with payload)")
    c.save_rule()
    st, r, _ = http("GET", "/targeting/rules/" + FLAG, admin)
    result(r["rules"] == doc, "rollout and a variant with a payload saved", r)

    # --- try it agrees with /evaluate ---
    for user, country in (("alice", "BR"), ("bob", "US")):
        q = "/evaluate?user_id=%s&flag_name=%s&country=%s" % (user, FLAG, country)
        expect = country == "BR"
        # the edge has the new rule within milliseconds; wait for it
        ev = until(lambda: (lambda s, j, h: j if s == 200 and j["result"] == expect else None)(*http("GET", q, admin)))
        c.type(c.t("try-user"), user)
        c.type(c.t("try-attrs"), "country=" + country)
        c.t("try-form").submit()
        reason = c.t("try-reason").text
        value = c.t("try-value").text
        variant = c.t("try-variant").text
        ui_on = value == "#00f" if expect else value == "false"
        result(ev and ui_on and ((variant == "blue" and reason == "TARGETING_MATCH") if expect
                                 else reason == "DEFAULT"),
               "try it (%s, country=%s) agrees with /evaluate (%s)" % (user, country, ev and ev["result"]),
               "value %s variant %s reason %s; /evaluate %s" % (value, variant, reason, ev))
    c.shot("flag-page")

    # --- segments ---
    c.go("#/segments")
    c.heading("Segments")
    c.type(c.t("segment-name"), "beta-testers")
    c.type(c.t("segment-description"), "opted in")
    con = c.all("constraint")[0]
    c.type(c.t("constraint-context", con), "email")
    Select(c.t("constraint-operator", con)).select_by_value("STR_ENDS_WITH")
    c.type(c.t("constraint-values", c.all("constraint")[0]), "@corp.io")
    c.t("segment-form").submit()
    used = c.t("used-beta-testers")
    st, s, _ = http("GET", "/targeting/segments/beta-testers", admin)
    result(st == 200 and s["constraints"][0]["operator"] == "STR_ENDS_WITH" and used.text == "not used",
           "create a segment; it is listed as not used", s)
    http("PUT", "/targeting/rules/" + FLAG, admin, {"rules": {"strategies": [{"segments": ["beta-testers"]}]}})
    c.go("#/flags")
    c.go("#/segments")
    result(until(lambda: c.t("used-beta-testers").text in (FLAG, FLAG + " (default)")), "the segment lists the flag that uses it",
           c.t("used-beta-testers").text)

    # --- keys: create (shown once), revoke, refused ---
    c.go("#/keys")
    c.heading("API keys")
    c.type(c.t("master-key"), MASTER)
    c.t("master-form").submit()
    c.t("keys-table")
    c.type(c.t("key-name"), "temporary")
    c.t("key-form").submit()
    shown = c.t("new-key").get_attribute("value")
    result(re.fullmatch(r"tm_key_[0-9a-f]{64}", shown or ""), "create a key: shown once", shown)
    st, j, _ = http("GET", "/auth/validate", shown)
    result(st == 200, "the new key works")
    kid = until(lambda: [r.get_attribute("data-key-id") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-key-id]")
                         if "temporary" in r.text and "active" in r.text])
    c.shot("keys")
    c.t("revoke-%s" % max(kid, key=int)).click()   # the newest
    c.confirm()
    refused = until(lambda: http("GET", "/flags/flags", shown)[0] == 401)
    result(refused, "a revoked key is refused by the gateway")
    c.take_log()
    c.sign_out()
    result(d.execute_script("return sessionStorage.length") == 0, "sign out clears the key from sessionStorage")
    c.go("#/flags")
    c.heading("Sign in")
    result(True, "after sign-out the console asks for a key again")
    c.sign_in(shown)
    err = c.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-test="signin-form"] .notice.error'))
    result("not valid" in err.text, "the console refuses the revoked key", err.text)


def readonly(c):
    st, j = new_key("viewer", scope="readonly")
    if st != 201 or j.get("scope") != "readonly":
        skip("read-only key: write controls disabled", "this server has no scoped keys yet (issue 12): auth made an admin key")
        return
    # the daemons know scoped keys before the edge does (docs/environments.md:
    # an edge without them refuses them, failing closed)
    st_read = until(lambda: http("GET", "/flags/flags", j["key"])[0] == 200, timeout=5)
    if not st_read:
        skip("read-only key: write controls disabled",
             "the gateway refuses read-only keys on the admin routes (GET /flags/flags: %s): the edge does not know scoped keys yet"
             % http("GET", "/flags/flags", j["key"])[0])
        return
    c.sign_in(j["key"])
    c.heading("Flags")
    banner = c.d.find_element(By.ID, "ro-reason")
    create = c.t("create-flag").find_element(By.CSS_SELECTOR, "button[type=submit]")
    sw = c.t("switch-%s-default" % FLAG)
    result(c.t("scope").text == "readonly key" and banner.is_displayed() and not create.is_enabled()
           and not sw.is_enabled() and sw.get_attribute("aria-describedby") == "ro-reason",
           "read-only key: create and switches disabled, the reason shown")
    c.go("#/flags/" + FLAG)
    c.heading(FLAG)
    result(not c.t("save-rule").is_enabled() and not c.t("delete-flag").is_enabled(),
           "read-only key: the rule editor cannot save or delete")
    c.shot("readonly")
    c.sign_out()


def environments(c, admin):
    """Once the gateway answers GET /flags/environments (issue 12): an
    environment made on its page gets a switch per flag, and turning a flag
    off in production asks first, naming the effect."""
    st, envs, _ = http("GET", "/flags/environments", admin)
    if st != 200 or not isinstance(envs, list):
        skip("environments: per-environment switches, production confirmation",
             "the gateway has no environments API yet (issue 12): GET /flags/environments %s" % st)
        return
    d = c.d
    c.sign_in(admin)
    c.heading("Flags")
    c.go("#/environments")
    c.heading("Environments")
    c.type(c.t("env-name"), "production")
    c.t("env-name").submit()
    c.wait.until(lambda d: d.find_elements(By.XPATH, "//tbody/tr/th[text()='production']"))
    c.go("#/flags")
    sw = c.t("switch-%s-production" % FLAG)
    result(sw.get_attribute("aria-checked") == "false", "a new environment: the flag is off there")
    sw.click()
    until(lambda: c.t("switch-%s-production" % FLAG).get_attribute("aria-checked") == "true")
    st, f, _ = http("GET", "/flags/flags/%s?environment=production" % FLAG, admin)
    result(f and f["is_enabled"] is True, "switched on in production only", f)
    c.t("switch-%s-production" % FLAG).click()
    dlg = c.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "dialog[open]"))
    text = dlg.text
    c.shot("production-confirm")
    c.t("confirm-cancel").click()
    st, f, _ = http("GET", "/flags/flags/%s?environment=production" % FLAG, admin)
    result("production" in text and "false" in text and f["is_enabled"] is True,
           "turning it off in production asks first, naming the effect; cancel changes nothing", text)
    c.t("switch-%s-production" % FLAG).click()
    c.confirm()
    off = until(lambda: http("GET", "/flags/flags/%s?environment=production" % FLAG, admin)[1]["is_enabled"] is False)
    result(off, "confirmed: off in production")
    Select(c.t("env-filter")).select_by_value("production")
    result(until(lambda: not c.all("switch-%s-default" % FLAG) and c.all("switch-%s-production" % FLAG)),
           "the environment filter shows that environment's switches only")
    c.sign_out()


def records(c):
    """The audit records shown: (kind, name, action, actor, at) each."""
    return [(r.get_attribute("data-kind"), r.get_attribute("data-name"), r.get_attribute("data-action"),
             c.t("audit-actor", r).text, r.find_element(By.TAG_NAME, "time").get_attribute("datetime"))
            for r in c.all("audit-record")]


def audit(c, admin):
    """The audit log (issue 16): the changes made above through the console,
    with actor and before/after; the flag's merged history; load more."""
    d = c.d
    c.sign_in(admin)
    c.heading("Flags")
    c.go("#/audit")
    c.heading("Audit log")
    Select(c.t("audit-kind")).select_by_value("flag")
    c.type(c.t("audit-name"), FLAG)
    c.t("audit-form").submit()
    until(lambda: any(r[2] == "create" for r in records(c)))
    recs = records(c)
    created = [r for r in recs if r[2] == "create"]
    result(created and created[0][3] == "console-admin" and all(r[0] == "flag" and r[1] == FLAG for r in recs),
           "audit log, kind=flag name=%s: its creation, by the console's key" % FLAG, recs)
    # the switch turned it on: an update whose diff shows is_enabled false -> true
    switched = d.execute_script("""
        return [...document.querySelectorAll('[data-test=audit-record][data-action=update] tr[data-member=is_enabled]')]
          .map((tr) => [tr.querySelector('[data-test=diff-before]').textContent, tr.querySelector('[data-test=diff-after]').textContent]);""")
    result(["false", "true"] in switched, "the switch shows with before false and after true", switched)
    ats = [r[4] for r in recs]
    result(ats == sorted(ats, reverse=True), "newest first", ats)
    c.shot("audit")
    # the other filters reach the daemons: an environment, an actor
    if c.all("audit-env"):
        Select(c.t("audit-env")).select_by_value("production")
        c.t("audit-form").submit()
        envs = until(lambda: (lambda e: e if e and "" not in e else None)(d.execute_script(
            "return [...document.querySelectorAll('[data-test=audit-record]')].map((r) => r.textContent.includes(' in production ') ? 'production' : '')")))
        st, api_recs, _ = http("GET", "/flags/audit?kind=flag&name=%s&environment=production" % FLAG, admin)
        result(envs and len(envs) == len((api_recs or {}).get("records", [])),
               "filter by environment: only the production records (%d)" % len(envs or []), envs)
        Select(c.t("audit-env")).select_by_value("")
    c.type(c.t("audit-actor-filter"), "nobody-such")
    c.t("audit-form").submit()
    empty = until(lambda: not c.all("audit-record") and "No change matches" in c.t("audit-results").text)
    result(empty, "filter by an actor who changed nothing: none, said so")
    c.type(c.t("audit-actor-filter"), "console-admin")
    c.t("audit-form").submit()
    result(until(lambda: c.all("audit-record") and all(r[3] == "console-admin" for r in records(c))),
           "filter by actor: that key's changes")

    # the flag page: its flag and rule changes merged
    c.go("#/flags/" + FLAG)
    c.heading(FLAG)
    c.t("show-history").click()
    until(lambda: {r[0] for r in records(c)} >= {"flag", "rule"})
    recs = records(c)
    ats = [r[4] for r in recs]
    st1, fl, _ = http("GET", "/flags/audit?kind=flag&name=" + FLAG, admin)
    st2, ru, _ = http("GET", "/targeting/audit?kind=rule&name=" + FLAG, admin)
    want = sorted([r["at"] for r in (fl or {}).get("records", []) + (ru or {}).get("records", [])], reverse=True)
    result({r[0] for r in recs} == {"flag", "rule"} and all(r[1] == FLAG for r in recs) and ats == want,
           "the flag's history: its flag and rule records merged newest first, as the daemons have them",
           "%s vs %s" % (recs, want))
    rule_diff = d.execute_script("""
        const tr = document.querySelector('[data-test=flag-history] [data-kind=rule][data-action=create] tr[data-member=rules]');
        return tr && [tr.querySelector('[data-test=diff-before]').textContent, tr.querySelector('[data-test=diff-after]').textContent];""")
    result(rule_diff and rule_diff[0] == "—" and "country" in rule_diff[1],
           "the rule's creation: no before, the rule after", rule_diff)
    c.shot("history")

    # load more: 60 creations through the API, read back page by page
    names = ["bulk-%02d" % i for i in range(60)]
    for n in names:
        http("POST", "/flags/flags", admin, {"name": n})
    c.go("#/audit")
    c.heading("Audit log")
    until(lambda: c.all("audit-record"))
    first = len(c.all("audit-record"))
    clicks = 0
    while c.all("audit-more") and c.all("audit-more")[0].is_displayed() and clicks < 10:
        n = len(c.all("audit-record"))
        c.t("audit-more").click()
        clicks += 1
        until(lambda: len(c.all("audit-record")) > n or not c.t("audit-more", d).is_displayed())
    recs = records(c)
    bulk = sorted(r[1] for r in recs if r[1].startswith("bulk-") and r[2] == "create")
    ats = [r[4] for r in recs]
    result(first <= 50 and clicks >= 1 and bulk == names and ats == sorted(ats, reverse=True)
           and len(recs) == len(set((r[1], r[2], r[4]) for r in recs)),
           "load more: every creation once, newest first (%d shown first, %d clicks, %d in all)" % (first, clicks, len(recs)))
    for n in names:
        http("DELETE", "/flags/flags/" + n, admin)


def usage(c, admin):
    """Usage: the flag's chart once evaluations have been counted (when the
    stack runs the analytics worker with moto), else the page says why; the
    stale list page renders."""
    for user in ("u1", "u2", "u3", "u4"):
        http("GET", "/evaluate?user_id=%s&flag_name=%s&country=BR" % (user, FLAG), admin)
    q = "/analytics/flags/%s/usage?granularity=day" % FLAG
    counted = until(lambda: (lambda s, j, h: j if s == 200 and (j.get("totals") or {}).get("evaluations", 0) >= 4 else None)(*http("GET", q, admin)), timeout=40)
    st, j, _ = http("GET", q, admin)
    c.go("#/flags/" + FLAG)
    c.heading(FLAG)
    out = c.t("usage-result")
    if counted:
        until(lambda: c.all("usage-totals"))
        bars = d_bars = c.d.find_elements(By.CSS_SELECTOR, '[data-test="usage-chart"] rect.bar')
        tall = [b.get_attribute("height") for b in d_bars if float(b.get_attribute("height") or 0) > 0]
        total = c.t("usage-totals").text
        result(bars and tall and total.startswith("%d evaluations" % counted["totals"]["evaluations"]),
               "usage: the evaluations counted show as a bar chart with the totals", "%s; %d bars, tall %s" % (total, len(bars), tall))
        c.d.execute_script("arguments[0].scrollIntoView()", c.t("flag-usage"))
        c.shot("usage")
    elif st in (502, 503, 504):
        shown = until(lambda: "analytics service is not answering" in out.text)
        result(shown, "usage: the analytics service away (HTTP %s) is said plainly" % st, out.text)
    else:
        skip("usage: a bar chart after evaluations", "the stack counted no usage (GET %s: %s %s)" % (q, st, j))
    c.go("#/usage")
    c.heading("Stale flags")
    shown = until(lambda: c.all("stale-table") or c.d.find_elements(By.CSS_SELECTOR, '[data-test="stale-result"] .notice'))
    result(shown, "the stale flags page renders its list or its reason",
           c.t("stale-result").text if shown else "nothing")
    if ANALYTICS_PID is None:
        skip("usage: the analytics service away is said plainly", "no analytics worker pid given")
    else:
        os.kill(ANALYTICS_PID, signal.SIGTERM)
        gone = until(lambda: http("GET", q, admin)[0] in (502, 503, 504), timeout=20)
        c.go("#/flags/" + FLAG)
        c.heading(FLAG)
        said = until(lambda: "analytics service is not answering" in c.t("usage-result").text)
        c.go("#/usage")
        c.heading("Stale flags")
        said_stale = until(lambda: "analytics service is not answering" in c.t("stale-result").text)
        result(gone and said and said_stale,
               "the analytics worker stopped: the flag page and the stale page say the service is not answering",
               "%s / %s" % (http("GET", q, admin)[0], c.t("stale-result").text))
        c.shot("usage-away")
    c.sign_out()


def csp_holds(c):
    """Markup injected into the page the way an HTML-building bug would:
    CSP keeps its inline script and handler from running."""
    c.take_log()
    before = [e for e in c.log if e["level"] == "SEVERE"
              and not (e.get("source") == "network" and re.search(r"status of 4\d\d", e["message"]))
              and not (e.get("source") == "network" and "/analytics/" in e["message"]
                       and re.search(r"status of 50[234]", e["message"]))]
    result(not before, "no console errors (network 4xx answers the console expects, and the analytics service away, aside)",
           "\n".join(e["message"] for e in before))
    d = c.d
    d.execute_script("""
        window.__csp = [];
        document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective));
        document.body.insertAdjacentHTML('beforeend', '<img src="x.png" onerror="window.__xss=1">');
        const s = document.createElement('script'); s.textContent = 'window.__xss = 2'; document.body.append(s);""")
    got = until(lambda: d.execute_script("return window.__csp.length >= 2 && window.__csp"))
    result(d.execute_script("return window.__xss === undefined") and got,
           "CSP: an injected inline script and handler do not run", got)


def main():
    st, j = new_key("console-admin")
    if st != 201:
        result(False, "an admin key for the console", j)
        return
    d = browser()
    try:
        c = Console(d)
        flows(c, j["key"])
        readonly(c)
        environments(c, j["key"])
        audit(c, j["key"])
        usage(c, j["key"])
        d.set_window_size(375, 800)
        c.sign_in(j["key"])
        c.heading("Flags")
        wide = d.execute_script("return document.documentElement.scrollWidth")
        result(wide <= 375, "usable at 375 px: no page-wide horizontal scroll", wide)
        c.shot("mobile")
        c.go("#/audit")
        c.heading("Audit log")
        until(lambda: c.all("audit-record"))
        wide = d.execute_script("return document.documentElement.scrollWidth")
        result(wide <= 375, "the audit log at 375 px: no page-wide horizontal scroll", wide)
        csp_holds(c)
    finally:
        d.quit()


if __name__ == "__main__":
    main()
