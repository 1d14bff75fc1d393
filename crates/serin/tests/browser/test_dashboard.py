"""The dashboard at /ui in real Chromium against a real Serin server.

Run by crates/serin/tests/it/dashboard.rs, which starts the server, creates the tokens,
pushes support@1 and support@2, deploys support@1 in prod and keeps one SDK instance
connected there. Everything this script changes goes through the public API, like an
operator or an agent would; every assertion reads what the browser shows.

`test_dashboard.py approvals` is the approvals scenario: the Rust test has created an approver
(SERIN_APPROVER_TOKEN) and a deployer (SERIN_DEPLOYER_TOKEN); this script sets the policy,
files the requests through the API and decides them in the browser.

`test_dashboard.py waves` is the rolling-waves scenario: the Rust test has started a waved
release (waves us, eu, ap, one region each) with three real SDK instances connected, and
drives their traffic (eu-west regresses) once this script has created SERIN_READY_FILE.
"""

import json
import os
import sys
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

URL = os.environ["SERIN_URL"]
ADMIN = os.environ["SERIN_ADMIN_TOKEN"]
VIEWER = os.environ.get("SERIN_VIEWER_TOKEN", "")
DOOMED = os.environ.get("SERIN_DOOMED_TOKEN", "")
APPROVER = os.environ.get("SERIN_APPROVER_TOKEN", "")
SDK = os.environ.get("SERIN_SDK_TOKEN", "")
DEPLOYER = os.environ.get("SERIN_DEPLOYER_TOKEN", "")
SHOT_DIRS = [d for d in os.environ.get("SERIN_SCREENSHOT_DIRS", "").split(os.pathsep) if d]
CHROMIUM = os.environ.get("SERIN_CHROMIUM", "/usr/bin/chromium")
# Live updates arrive within the stream's 1 s poll; the controller ticks every second.
LIVE = 20_000
# A waved release runs three waves of two steps on live SDK traffic.
WAVES = 150_000

PLAN = {
    "steps": [
        {"canary": {"weight": "5%", "min_duration": "1s", "min_requests": 100}},
        {"canary": {"weight": "25%", "min_duration": "1s", "min_requests": 100}},
        {"canary": {"weight": "50%", "min_duration": "1s", "min_requests": 100}},
    ],
    "promotion": "auto",
    "stickiness": "user",
    "guardrails": {"error_rate": {"max": "5%", "max_increase": "2pp"}, "settings": {"min_requests": 100}},
    "on_failure": "rollback",
}


def call(method, path, body=None, token=ADMIN):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def ok(method, path, body=None, token=ADMIN):
    status, answer = call(method, path, body, token)
    assert 200 <= status < 300, f"{method} {path}: {status} {answer}"
    return answer


def traffic(start, n, canary_error_every):
    """n canary outcomes (every `canary_error_every`-th an error, 0: none) and 9 stable per
    canary one, each tagged with the snapshot version it was routed under."""
    version = ok("GET", "/v1/envs/prod/snapshot")["version"]

    def event(i, arm, bundle, error):
        return {
            "request_id": f"{arm}-{bundle}-{i}", "agent": "support", "env": "prod",
            "snapshot_version": version, "bundle": bundle, "arm": arm, "user": f"u{i}",
            "latency_ms": 500.0 + i % 40, "cost_usd": 0.01, "tool_calls": {"ok": 1, "failed": 0},
            "error": {"class": "permanent"} if error else None,
        }

    events = []
    for i in range(start, start + n):
        for j in range(9):
            k = i * 9 + j
            events.append(event(k, "stable", "support@1", k % 100 == 0))
        events.append(event(i, "canary", "support@2", canary_error_every > 0 and i % canary_error_every == 0))
    for c in range(0, len(events), 2000):
        answer = ok("POST", "/v1/outcomes", {"events": events[c:c + 2000]})
        assert answer["rejected"] == 0, answer


def shot(page, name):
    for d in SHOT_DIRS:
        os.makedirs(d, exist_ok=True)
        page.screenshot(path=os.path.join(d, f"{name}.png"))


def sign_in(page, token):
    page.goto(URL + "/ui")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # Keyboard only: the token field has focus, Enter submits.
    expect(page.get_by_label("API token")).to_be_focused()
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def sign_out(page):
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def agent_row(page):
    return page.locator('section[data-env="prod"] tr[data-agent="support"]')


def confirm(page, reason):
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    # The reason is required: an empty one does not submit.
    page.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_visible()
    page.get_by_label("Reason (required, audited)").fill(reason)
    page.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()


def launch(p):
    # Chromium refuses its sandbox as root (CI containers); elsewhere it keeps it.
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return p.chromium.launch(executable_path=CHROMIUM, args=args)


def watch_console(page, problems):
    # A CSP violation or a script error shows up here; none is acceptable. Chromium also
    # logs every 4xx answer, which this script provokes on purpose.
    def console(m):
        if m.type == "error" and not m.text.startswith("Failed to load resource"):
            problems.append(f"console: {m.text}")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))


def wave_row(page, name):
    return page.locator(f'.waves-table tr[data-wave="{name}"]')


def waves_main():
    problems = []
    with sync_playwright() as p:
        browser = launch(p)
        ctx = browser.new_context(viewport={"width": 1366, "height": 900})
        page = ctx.new_page()
        watch_console(page, problems)
        sign_in(page, ADMIN)
        page.goto(URL + "/ui#/env/prod/agent/support/release")
        expect(page.get_by_role("heading", name="Waves")).to_be_visible(timeout=LIVE)
        # Before any traffic: us runs its first step (50% of us-east), eu and ap wait.
        table = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Wave"))
        expect(table.get_by_role("row")).to_have_count(4)
        expect(wave_row(page, "us").locator(".wave-state .badge")).to_have_text("active")
        expect(wave_row(page, "us").locator(".wave-weight")).to_have_text("50%")
        expect(wave_row(page, "us")).to_have_attribute("aria-current", "step")
        expect(wave_row(page, "us").get_by_role("rowheader")).to_contain_text("current")
        expect(wave_row(page, "us").get_by_role("rowheader")).to_contain_text("region us-east")
        for name in ("eu", "ap"):
            expect(wave_row(page, name).locator(".wave-state .badge")).to_have_text("pending")
            expect(wave_row(page, name).locator(".wave-weight")).to_have_text("0%")
            expect(wave_row(page, name)).not_to_have_attribute("aria-current", "step")
        # Six steps in all (two per wave), and the step says its wave.
        expect(page.locator("#step")).to_have_text("step 1/6 (wave us)")
        page.evaluate("window.__notReloaded = true")
        boxes = {sel: page.locator(sel).bounding_box() for sel in [".waves-table", ".chart-box", ".guardrails"]}
        rows = [wave_row(page, n).bounding_box() for n in ("us", "eu", "ap")]
        with open(os.environ["SERIN_READY_FILE"], "w") as f:
            f.write("ready")

        # The Rust test now drives the three regions' traffic; eu's candidate fails.
        eu = wave_row(page, "eu")
        expect(eu.locator(".wave-state .badge")).to_have_text("rolled_back", timeout=WAVES)
        expect(wave_row(page, "us").locator(".wave-state .badge")).to_have_text("done", timeout=WAVES)
        expect(wave_row(page, "ap").locator(".wave-state .badge")).to_have_text("done", timeout=WAVES)
        expect(page.locator("#phase")).to_have_text("halted", timeout=LIVE)
        expect(eu.locator(".wave-weight")).to_have_text("0%")
        expect(wave_row(page, "us").locator(".wave-weight")).to_have_text("100%")
        expect(wave_row(page, "ap").locator(".wave-weight")).to_have_text("100%")
        # eu's own evidence: its failed verdict, and the failure that drained it.
        expect(eu.locator(".wave-failure")).to_contain_text("error_rate")
        expect(eu.locator('.wave-verdicts li[data-guardrail^="error_rate"] .badge-fail').first).to_be_visible()
        # Once the release stops, no wave is marked current (ap, the last, is done).
        expect(page.locator('.waves-table tr[aria-current]')).to_have_count(0)
        assert int(eu.locator(".wave-requests").inner_text().split()[0]) > 0
        # The waves that completed show verdicts of their own, none failed.
        for name in ("us", "ap"):
            row = wave_row(page, name)
            expect(row.locator(".wave-verdicts li").first).to_be_visible()
            expect(row.locator(".wave-verdicts .badge-fail")).to_have_count(0)
            expect(row.locator(".wave-failure")).to_have_text("-")
        expect(page.locator(".waves-table caption")).to_have_text("2 of 3 waves done")
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
        for sel, before in boxes.items():
            after = page.locator(sel).bounding_box()
            assert after["y"] == before["y"], f"live data moved {sel}: {before} -> {after}"
        after = [wave_row(page, n).bounding_box() for n in ("us", "eu", "ap")]
        assert [r["height"] for r in after] == [r["height"] for r in rows], f"wave rows changed height: {rows} -> {after}"
        shot(page, "waves")

        # The fleet: the plain list first, then what each instance serves of support.
        page.get_by_role("link", name="What each SDK instance serves").click()
        expect(page.get_by_label("What each instance serves of")).to_have_value("support")
        page.goto(URL + "/ui#/env/prod/fleet")
        expect(page.get_by_role("columnheader", name="Applied")).to_be_visible(timeout=LIVE)
        expect(page.get_by_role("row", name="pod-eu-west")).to_contain_text("eu-west")
        page.get_by_label("What each instance serves of").select_option("support")
        expect(page).to_have_url(URL + "/ui#/env/prod/fleet/support")
        expect(page.get_by_role("columnheader", name="Wave")).to_be_visible(timeout=LIVE)
        want = {"us-east": ("support@2", "us"), "eu-west": ("support@1", "eu"), "ap-south": ("support@2", "ap")}
        for region, (serves, wave) in want.items():
            row = page.locator(f'.fleet-table tr[data-instance="pod-{region}"]')
            expect(row.locator(".serves")).to_have_text(serves, timeout=LIVE)
            expect(row.locator(".wave")).to_have_text(wave)
            expect(row).to_contain_text(region)
            expect(row).to_contain_text("yes")
        shot(page, "fleet")
        # An agent the env does not route: the server's 404, nearest name included.
        page.goto(URL + "/ui#/env/prod/fleet/suport")
        expect(page.locator("#fleet-error")).to_contain_text("404", timeout=LIVE)
        expect(page.locator("#fleet-error")).to_contain_text("did you mean support")
        page.get_by_label("What each instance serves of").select_option("")
        expect(page.get_by_role("columnheader", name="Applied")).to_be_visible(timeout=LIVE)
        ctx.close()

        # On a phone the waves and the fleet scroll inside their cards.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page = phone.new_page()
        watch_console(page, problems)
        sign_in(page, ADMIN)
        for hash_, ready in [("#/env/prod/agent/support/release", ".waves-table"), ("#/env/prod/fleet/support", ".fleet-table")]:
            page.goto(URL + "/ui" + hash_)
            expect(page.locator(ready)).to_be_visible(timeout=LIVE)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{hash_} is {width}px wide on a phone"
        phone.close()
        browser.close()
    assert not problems, "\n".join(problems)
    print("dashboard: the waves scenario passed")


def approval_card(page, id_):
    return page.locator(f'article.approval[data-id="{id_}"]')


def unkill(token, reason):
    """An unkill of support in prod under a policy that reserves it: 202 and the request."""
    status, answer = call("POST", "/v1/envs/prod/agents/support/unkill", {"reason": reason}, token)
    assert status == 202, f"unkill: {status} {answer}"
    assert answer["approval"]["status"] == "pending", answer
    return answer["approval"]


def decide(page, id_, verb, reason):
    """Approve or Deny from the card; the dialog refuses an empty reason first."""
    card = approval_card(page, id_)
    card.get_by_role("button", name=verb).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_label("Reason (required, audited)")).to_be_focused()
    dialog.get_by_role("button", name=verb).click()
    expect(dialog).to_be_visible()
    page.get_by_label("Reason (required, audited)").fill(reason)
    dialog.get_by_role("button", name=verb).click()
    expect(dialog).to_be_hidden()


def approvals_main():
    problems = []
    ok("PUT", "/v1/envs/prod/approval-policy", {"require": ["unkill"]})
    ok("POST", "/v1/envs/prod/agents/support/kill", {"reason": "incident"})
    with sync_playwright() as p:
        browser = launch(p)
        ctx = browser.new_context(viewport={"width": 1366, "height": 900})
        page = ctx.new_page()
        watch_console(page, problems)
        sign_in(page, APPROVER)
        page.get_by_role("link", name="Approvals").click()
        expect(page.get_by_role("heading", name="Approvals", exact=True)).to_be_visible()
        expect(page.locator(".approvals .empty")).to_be_visible(timeout=LIVE)
        page.evaluate("window.__notReloaded = true")

        # The deployer's unkill waits; the page shows it without a reload.
        first = unkill(DEPLOYER, "fixed")
        card = approval_card(page, first["id"])
        expect(card).to_be_visible(timeout=LIVE)
        expect(card.get_by_role("heading")).to_contain_text("Unkill")
        expect(card.get_by_role("heading")).to_contain_text("support in prod")
        expect(card.locator(".reason")).to_have_text("fixed")
        expect(card.locator(".requester")).to_have_text(first["requested_by"])
        expect(card.locator(".approval-when")).to_contain_text("expires in")
        expect(card).to_contain_text("the whole-agent kill")
        expect(page.locator("#nav-approvals-count")).to_contain_text("1", timeout=LIVE)

        # Approve: an empty reason is refused in the page, then the approval goes through.
        decide(page, first["id"], "Approve", "checked the fix")
        expect(page.locator(f'#msg-approve-{first["id"]}')).to_contain_text("approved: checked the fix", timeout=LIVE)
        expect(card.locator(".badge").first).to_have_text("approved")
        expect(card.locator(".decision")).to_have_text("checked the fix")
        expect(card.get_by_role("button", name="Approve")).to_be_hidden()
        assert ok("GET", f'/v1/approvals/{first["id"]}')["status"] == "approved"

        # A second request, denied: the card says denied, by whom and why.
        second = unkill(DEPLOYER, "fixed again")
        assert second["id"] != first["id"], second
        card2 = approval_card(page, second["id"])
        expect(card2).to_be_visible(timeout=LIVE)
        decide(page, second["id"], "Deny", "not yet")
        expect(page.locator(f'#msg-deny-{second["id"]}')).to_contain_text("denied: not yet", timeout=LIVE)
        expect(card2.locator(".badge").first).to_have_text("denied")
        expect(card2.locator(".decision")).to_have_text("not yet")
        expect(card2.locator(".approval-when")).to_contain_text("denied")
        # Both stay listed under "All", pending first.
        page.get_by_label("Status").select_option("")
        expect(page.locator("article.approval")).to_have_count(2, timeout=LIVE)
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"

        # An agent asks before a risky tool call: the card shows the tool, digest and request.
        status, call_req = call("POST", "/v1/approvals", {
            "env": "prod", "agent": "support", "bundle": 1, "tool": "issue_refund",
            "args_digest": "sha256:9f2c4e1a", "reason": "refund above 500 EUR", "request_id": "req-4711",
        }, SDK)
        assert status == 201, f"agent request: {status} {call_req}"
        page.get_by_label("Status").select_option("pending")
        card4 = approval_card(page, call_req["id"])
        expect(card4).to_be_visible(timeout=LIVE)
        expect(card4.get_by_role("heading")).to_contain_text("Agent tool call")
        expect(card4.get_by_role("heading")).to_contain_text("support@1 in prod")
        expect(card4).to_contain_text("issue_refund")
        expect(card4).to_contain_text("sha256:9f2c4e1a")
        expect(card4).to_contain_text("req-4711")
        sign_out(page)

        # The admin files an unkill itself, then tries to approve it: the server's 403 shows.
        own = unkill(ADMIN, "I fixed it myself")
        sign_in(page, ADMIN)
        page.goto(URL + "/ui#/approvals")
        card3 = approval_card(page, own["id"])
        expect(card3).to_be_visible(timeout=LIVE)
        decide(page, own["id"], "Approve", "trust me")
        msg = page.locator(f'#msg-approve-{own["id"]}')
        expect(msg).to_contain_text("403", timeout=LIVE)
        expect(msg).to_contain_text("the requester cannot decide their own request")
        expect(card3.locator(".badge").first).to_have_text("pending")
        page.get_by_label("Status").select_option("")
        expect(page.locator("article.approval")).to_have_count(4, timeout=LIVE)
        shot(page, "approvals")
        ctx.close()

        # On a phone the queue fits the width.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page = phone.new_page()
        watch_console(page, problems)
        sign_in(page, APPROVER)
        page.goto(URL + "/ui#/approvals")
        expect(approval_card(page, own["id"])).to_be_visible(timeout=LIVE)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the approvals page is {width}px wide on a phone"
        phone.close()
        browser.close()
    assert not problems, "\n".join(problems)
    print("dashboard: the approvals scenario passed")


def main():
    problems = []
    with sync_playwright() as p:
        browser = launch(p)
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        watch_console(page, problems)

        # A wrong token is refused with the server's reason and never kept.
        page.goto(URL + "/ui")
        page.get_by_label("API token").fill("serin_nope_nope")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#signin-msg")).to_contain_text("Sign-in refused")
        assert page.evaluate("sessionStorage.getItem('serin.token')") is None

        # Sign in; the overview lists support in prod with its stable and the SDK.
        sign_in(page, ADMIN)
        # The stream reader the pages use: events split anywhere across chunks come out
        # whole, CRLF and LF alike, and heartbeat comments are dropped.
        parsed = page.evaluate("""async () => {
            const { sseParser } = await import('/ui/api.js');
            const got = [];
            const feed = sseParser((e) => got.push(e));
            for (const c of [': keep-alive\\n\\nevent: ov', 'erview\\r', '\\ndata: {"a":', '1}\\n', '\\n', 'data: x\\n\\n']) feed(c);
            return got;
        }""")
        assert parsed == [{"event": "overview", "data": '{"a":1}'}, {"event": "message", "data": "x"}], parsed
        row = agent_row(page)
        expect(row).to_contain_text("support@1")
        # The announced state is "Live"; the update time beside it is not announced.
        expect(page.get_by_role("status").filter(has_text="Live")).to_have_text("Live")
        expect(page.locator('section[data-env="prod"] .sdks')).to_contain_text("1 connected")
        assert page.evaluate("sessionStorage.getItem('serin.token')") == ADMIN
        assert ADMIN not in page.url

        # A release whose guardrail will breach: it climbs, then rolls back, live.
        ok("POST", "/v1/envs/prod/agents/support/releases", {"bundle": 2, "plan": PLAN})
        expect(row).to_contain_text("canary", timeout=LIVE)
        expect(row).to_contain_text("step 1/3")
        shot(page, "overview")
        row.get_by_role("link", name="support@2").click()
        expect(page.get_by_role("heading", name="Release of support in prod")).to_be_visible()
        expect(page.locator("#step")).to_have_text("step 1/3", timeout=LIVE)
        expect(page.locator("#weight")).to_have_text("5%")
        # Too early: the gate does not hold, and the server says what is missing.
        page.get_by_role("button", name="Promote").click()
        expect(page.locator("#msg-promote")).to_contain_text("422")
        expect(page.locator("#msg-promote")).to_contain_text("canary requests")
        page.evaluate("window.__notReloaded = true")
        chart = page.locator(".chart-box").bounding_box()
        guardrails = page.locator(".guardrails").bounding_box()

        traffic(0, 150, 0)
        ok("POST", "/v1/system/clock", {"advance_ms": 1100})
        expect(page.locator("#step")).to_have_text("step 2/3", timeout=LIVE)
        expect(page.locator("#weight")).to_have_text("25%")
        expect(page.locator('tr[data-guardrail^="error_rate"]').first).to_be_visible()

        traffic(150, 400, 4)
        expect(page.locator("#phase")).to_have_text("rolled_back", timeout=LIVE)
        expect(page.locator("#failure")).to_contain_text("error_rate")
        expect(page.locator(".timeline li").first).to_contain_text("rolled_back")
        expect(page.get_by_role("button", name="Abort")).to_be_hidden()
        assert page.locator(".chart .weight-dot").count() >= 3, "the chart shows every transition"
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
        moved = page.locator(".chart-box").bounding_box()
        assert moved == chart, f"live data moved the chart: {chart} -> {moved}"
        moved = page.locator(".guardrails").bounding_box()
        assert moved["y"] == guardrails["y"], f"live data moved the guardrails: {guardrails} -> {moved}"
        shot(page, "release")

        # Roll back by hand from the agent page: support@2 deployed, then back to support@1.
        ok("POST", "/v1/envs/prod/agents/support/deploy", {"bundle": 2, "force": True, "reason": "hotfix"})
        page.goto(URL + "/ui#/env/prod/agent/support")
        expect(page.locator("#stable")).to_have_text("support@2", timeout=LIVE)
        expect(page.locator("#previous")).to_have_text("support@1")
        # A second operator has the same page open in another browser.
        other_ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        other = other_ctx.new_page()
        sign_in(other, ADMIN)
        other.goto(URL + "/ui#/env/prod/agent/support")
        expect(other.locator("#previous")).to_have_text("support@1", timeout=LIVE)
        page.get_by_role("button", name="Roll back").click()
        other.get_by_role("button", name="Roll back").click()
        confirm(page, "support@2 answers badly")
        confirm(other, "same incident")
        expect(page.locator("#msg-rollback")).to_contain_text("stable support@1", timeout=LIVE)
        # The one who acted second loses: the server's 409 is shown as it said it.
        expect(other.locator("#msg-rollback")).to_contain_text("409 conflict", timeout=LIVE)
        expect(other.locator("#msg-rollback")).to_contain_text("no previous stable")
        expect(other.locator("#stable")).to_have_text("support@1", timeout=LIVE)
        other_ctx.close()
        expect(page.locator("#stable")).to_have_text("support@1", timeout=LIVE)
        expect(page.locator(".history")).to_contain_text("rolled_back")
        # Without an active release there is nothing to promote.
        expect(page.get_by_role("button", name="Promote")).to_be_hidden()
        page.get_by_label("Candidate bundle number (support@N)").fill("2")
        page.get_by_role("button", name="Check readiness").click()
        expect(page.locator(".readiness-out")).to_contain_text("support@2", timeout=LIVE)
        shot(page, "agent")

        page.goto(URL + "/ui#/env/prod/fleet")
        expect(page.get_by_role("row", name="i-browser-1")).to_contain_text("yes", timeout=LIVE)

        page.goto(URL + "/ui#/audit")
        expect(page.locator(".verify")).to_contain_text("Audit chain intact", timeout=LIVE)
        expect(page.locator(".audit-table")).to_contain_text("rollback")
        shot(page, "audit")
        sign_out(page)
        assert page.evaluate("sessionStorage.getItem('serin.token')") is None

        # A viewer reads the overview, and is refused (by the server) when rolling back.
        sign_in(page, VIEWER)
        expect(agent_row(page)).to_contain_text("support@1", timeout=LIVE)
        page.goto(URL + "/ui#/env/prod/agent/support")
        expect(page.locator("#stable")).to_have_text("support@1", timeout=LIVE)
        # Keyboard: Enter opens the confirmation, Escape cancels it and nothing is sent.
        page.get_by_role("button", name="Roll back").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("dialog")).to_be_visible()
        expect(page.get_by_label("Reason (required, audited)")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.get_by_role("dialog")).to_be_hidden()
        expect(page.locator("#msg-rollback")).to_have_text("")
        page.get_by_role("button", name="Roll back").click()
        confirm(page, "viewer tries")
        expect(page.locator("#msg-rollback")).to_contain_text("403 forbidden", timeout=LIVE)
        expect(page.locator("#msg-rollback")).to_contain_text("viewer")
        sign_out(page)

        # A token revoked while its overview is open is sent back to sign-in.
        sign_in(page, DOOMED)
        expect(agent_row(page)).to_be_visible(timeout=LIVE)
        token_id = DOOMED.split("_")[1]
        ok("DELETE", f"/v1/tokens/{token_id}")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=LIVE)
        expect(page.locator("#signin-msg")).to_contain_text("Signed out")
        assert page.evaluate("sessionStorage.getItem('serin.token')") is None
        ctx.close()

        # A phone: the overview fits the width (tables scroll inside their card).
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page = phone.new_page()
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        sign_in(page, ADMIN)
        expect(agent_row(page)).to_be_visible(timeout=LIVE)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the phone overview is {width}px wide"
        shot(page, "overview-phone")
        for hash_, ready in [
            ("#/env/prod/agent/support", "#stable"),
            ("#/env/prod/agent/support/release", "#phase"),
            ("#/env/prod/fleet", "table"),
            ("#/audit", ".audit-table"),
        ]:
            page.goto(URL + "/ui" + hash_)
            expect(page.locator(ready).first).to_be_visible(timeout=LIVE)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{hash_} is {width}px wide on a phone"
        phone.close()
        browser.close()
    assert not problems, "\n".join(problems)
    print("dashboard: all browser scenarios passed")


if __name__ == "__main__":
    try:
        scenario = {"waves": waves_main, "approvals": approvals_main}
        (scenario[sys.argv[1]] if sys.argv[1:] else main)()
    except AssertionError as e:
        print(f"dashboard: {e}", file=sys.stderr)
        raise
