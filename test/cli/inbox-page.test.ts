/**
 * The inbox page in a real browser: Debian's Chromium, headless, driven by playwright-core,
 * against a running `effect-smtp serve --http`. A second local HTTP server stands in for the
 * trackers a message points at, so "nothing was fetched" is something the test can see fail.
 * The screenshot is kept in test/artifacts/ (and written to $INBOX_SCREENSHOT when set).
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { chromium } from "playwright-core"
import { crlf, type Inbox, send, start, tmpDir } from "../support/inbox.ts"

const chromiumPath = "/usr/bin/chromium"
// The network is closed here: without these, Chromium waits on connections that are refused.
const chromiumFlags = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]
const artifacts = path.resolve(import.meta.dirname, "../artifacts")

const tmp = tmpDir("effect-smtp-inbox-page-")
const cleanup: Array<() => Promise<unknown>> = []
afterAll(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined)
  fs.rmSync(tmp, { recursive: true, force: true })
})

/** A local server that records every request: the stand-in for a tracking pixel's host. */
const tracker = async () => {
  const hits: Array<string> = []
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? "")
    res.writeHead(200, { "content-type": "image/gif" }).end(Buffer.from("R0lGODlhAQABAAAAACw=", "base64"))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.push(() => new Promise((resolve) => server.close(resolve)))
  return { hits, origin: `http://127.0.0.1:${(server.address() as { port: number }).port}` }
}

const welcome = crlf(
  "From: Acme Cloud <hello@acme.example>",
  "To: Dana Developer <dana@example.com>",
  "Subject: Welcome to Acme Cloud, Dana",
  "Date: Tue, 01 Dec 2026 09:41:00 +0000",
  "MIME-Version: 1.0",
  "Content-Type: multipart/alternative; boundary=alt",
  "",
  "--alt",
  "Content-Type: text/plain; charset=utf-8",
  "",
  "Hi Dana, your workspace is ready. Confirm your address to get started.",
  "--alt",
  "Content-Type: text/html; charset=utf-8",
  "",
  "<div style=\"max-width:520px;margin:0 auto;font-family:system-ui,sans-serif\">",
  "<h2 style=\"color:#2f5bd3\">Welcome aboard, Dana</h2>",
  "<p>Your workspace <b>dana-dev</b> is ready. Confirm your address to get started.</p>",
  "<p><a href=\"https://acme.example/confirm\" style=\"display:inline-block;background:#2f5bd3;color:#fff;padding:10px 18px;border-radius:6px;text-decoration:none\">Confirm my address</a></p>",
  "<p style=\"color:#667085;font-size:13px\">You received this because you signed up at acme.example.</p>",
  "</div>",
  "--alt--"
)

const invoice = crlf(
  "From: Billing <billing@shop.example>",
  "To: dana@example.com",
  "Subject: Invoice #1042 for November",
  "Date: Tue, 01 Dec 2026 08:15:00 +0000",
  "Content-Type: multipart/mixed; boundary=mix",
  "",
  "--mix",
  "Content-Type: text/plain",
  "",
  "Your invoice for November is attached. Total: 49.00 EUR.",
  "--mix",
  "Content-Type: application/pdf; name=invoice-1042.pdf",
  "Content-Disposition: attachment; filename=invoice-1042.pdf",
  "Content-Transfer-Encoding: base64",
  "",
  Buffer.from("%PDF-1.4\n% not really a PDF\n").toString("base64"),
  "--mix--"
)

const reset = crlf(
  "From: Security <no-reply@accounts.example>",
  "To: dana@example.com",
  "Subject: Your password reset code",
  "Date: Tue, 01 Dec 2026 07:02:00 +0000",
  "",
  "Someone asked to reset the password of your account.",
  "Your code is 493 021. It expires in 15 minutes."
)

const tracking = (origin: string) =>
  crlf(
    "From: Newsletter <news@tracker.example>",
    "To: dana@example.com",
    "Subject: Weekly digest with a tracking pixel",
    "Date: Tue, 01 Dec 2026 09:00:00 +0000",
    "Content-Type: multipart/alternative; boundary=alt",
    "",
    "--alt",
    "Content-Type: text/plain",
    "",
    "This week: three things worth reading.",
    "--alt",
    "Content-Type: text/html",
    "",
    `<html><head><meta http-equiv="refresh" content="0;url=${origin}/refresh">`,
    `<link rel="stylesheet" href="${origin}/style.css"></head><body>`,
    `<p id="greeting">Hello from the HTML part</p>`,
    `<script>fetch("${origin}/script"); parent.document.title = "pwned"</script>`,
    `<img src="${origin}/pixel.gif" onerror="fetch('${origin}/onerror')" alt="">`,
    `<div style="background:url(${origin}/background.gif)">three things worth reading</div>`,
    "</body></html>",
    "--alt--"
  )

describe("the inbox page in Chromium", () => {
  it("lists mail, shows text and HTML, updates live, and fetches nothing remote unless asked", async () => {
    assert.isTrue(fs.existsSync(chromiumPath), `${chromiumPath} is missing: scripts/install-peers.sh installs Debian's chromium`)
    const remote = await tracker()
    const inbox: Inbox = await start(fs.mkdtempSync(path.join(tmp, "md-")))
    cleanup.push(() => inbox.r.stop("SIGKILL"))
    for (const message of [reset, invoice, tracking(remote.origin), welcome]) {
      await send(inbox, message, { from: "app@example.com", to: ["dana@example.com"] })
    }

    const context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(tmp, "chromium-")), {
      executablePath: chromiumPath,
      headless: true,
      args: chromiumFlags,
      viewport: { width: 1280, height: 800 }
    })
    cleanup.push(() => context.close())
    // Requests the browser attempts but blocks (CSP) do not get a response.
    const fetched: Array<string> = []
    context.on("response", (r) => fetched.push(r.url()))
    const page = context.pages()[0] ?? await context.newPage()
    page.setDefaultTimeout(10_000) // fail with the step's name, before the test's own timeout
    const problems: Array<string> = []
    page.on("pageerror", (e) => problems.push(e.message))

    await page.goto(`${inbox.url}/`)
    const item = (subject: string) => page.locator(".item", { hasText: subject })
    // The page's own policy forbids eval, so no waitForFunction: poll through locators.
    const until = async (what: string, check: () => Promise<boolean>) => {
      for (let i = 0; i < 100; i++) {
        if (await check()) return
        await page.waitForTimeout(50)
      }
      assert.fail(`timed out waiting until ${what}`)
    }
    const items = (n: number) => until(`${n} messages are listed`, async () => (await page.locator(".item").count()) === n)
    await item("Welcome to Acme Cloud").waitFor()
    assert.deepStrictEqual(
      await page.locator(".item .subject").allTextContents(),
      ["Welcome to Acme Cloud, Dana", "Weekly digest with a tracking pixel", "Invoice #1042 for November", "Your password reset code"]
    )
    assert.strictEqual(await item("Invoice").locator(".clip").getAttribute("title"), "1 attachment")
    await page.locator("#status.live").waitFor()
    await page.evaluate(`globalThis.sameDocument = true`)

    // The message view: headers, the HTML part in its sandbox, the text part.
    await item("tracking pixel").click()
    await page.locator("#m-subject", { hasText: "Weekly digest" }).waitFor()
    assert.include(await page.locator("#m-meta").textContent(), "Newsletter <news@tracker.example>")
    const frame = page.frameLocator("#m-html")
    await frame.locator("#greeting", { hasText: "Hello from the HTML part" }).waitFor()
    // A frame of its own origin: the page cannot reach into it, nor it into the page.
    assert.isTrue(await page.evaluate(`document.querySelector("#m-html").contentDocument === null`))
    assert.isTrue(await page.locator("#m-remote").isVisible(), "the page says remote content is blocked")
    fs.mkdirSync(artifacts, { recursive: true })
    await page.screenshot({ path: path.join(artifacts, "inbox-blocked.png") })
    await page.click(".tabs [data-tab=text]")
    assert.strictEqual((await page.locator("#m-text").textContent())?.trim(), "This week: three things worth reading.")

    // Nothing from the tracker: no image, style, background, refresh or script request.
    await page.waitForTimeout(300)
    assert.deepStrictEqual(remote.hits, [])
    assert.deepStrictEqual(fetched.filter((u) => u.startsWith(remote.origin)), [])
    assert.notStrictEqual(await page.title(), "pwned")

    // A new message appears without a reload.
    await send(inbox, crlf("From: ci@example.com", "To: dana@example.com", "Subject: Build 311 passed", "", "All green."))
    await item("Build 311 passed").waitFor()
    assert.isTrue(await page.evaluate(`globalThis.sameDocument === true`))

    // The screenshot: the welcome message open.
    await item("Welcome to Acme Cloud").click()
    await frame.locator("h2", { hasText: "Welcome aboard" }).waitFor()
    await page.screenshot({ path: path.join(artifacts, "inbox.png") })
    const readme = process.env["INBOX_SCREENSHOT"]
    if (readme !== undefined) {
      await page.waitForTimeout(2000) // the new message's highlight fades
      await page.screenshot({ path: readme })
    }

    // Asked for, remote images load (and still no script runs).
    await item("tracking pixel").click()
    await frame.locator("#greeting").waitFor()
    await page.click("#m-load-remote")
    await until("the pixel is fetched", () => Promise.resolve(remote.hits.includes("/pixel.gif")))
    assert.include(remote.hits, "/pixel.gif")
    assert.notInclude(remote.hits, "/script")
    assert.notInclude(remote.hits, "/refresh")
    assert.notInclude(remote.hits, "/onerror")

    // Search, then delete one message.
    await page.fill("#search", "invoice")
    await items(1)
    await item("Invoice #1042").click()
    await page.locator("#m-attachments a", { hasText: "invoice-1042.pdf" }).waitFor()
    await page.click("#m-delete")
    await items(0)
    await page.fill("#search", "")
    await items(4)
    assert.deepStrictEqual(problems, [])
    await item("password reset").click()
    await page.click(".tabs [data-tab=headers]")
    await page.screenshot({ path: path.join(artifacts, "inbox-headers.png") })

    // Delete all, after the page asks; then it says how to send mail.
    page.once("dialog", (dialog) => dialog.accept())
    await page.click("#delete-all")
    await items(0)
    await page.locator("#empty", { hasText: `Send one to ${inbox.smtp}` }).waitFor()
    await page.screenshot({ path: path.join(artifacts, "inbox-empty.png") })

  })
})
