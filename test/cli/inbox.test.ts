/**
 * The web inbox's HTTP API against a real `effect-smtp serve --http`: mail goes in over SMTP,
 * and comes out parsed, raw, searched, waited for, deleted, and kept across a restart. Hostile
 * mail gets its own section.
 */
import { afterAll, afterEach, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Cli from "../support/cli.ts"
import { crlf, getJson, type Inbox, send, start, tmpDir } from "../support/inbox.ts"

const tmp = tmpDir("effect-smtp-inbox-")
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }))

const running: Array<Cli.Running> = []
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop("SIGKILL")))
})

const serve = async (extra: ReadonlyArray<string> = [], maildir = fs.mkdtempSync(path.join(tmp, "md-"))) => {
  const inbox = await start(maildir, extra)
  running.push(inbox.r)
  return inbox
}

const newest = async (inbox: Inbox) => {
  const list = await getJson(inbox, "/api/messages")
  return list.body.messages[0]
}

const pixel = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64")

const rich = crlf(
  "From: Alice Example <alice@example.com>",
  "To: Bob <bob@example.com>, carol@example.com",
  "Cc: dave@example.com",
  "Subject: =?UTF-8?Q?Quarterly_r=C3=A9sum=C3=A9?=",
  "Date: Tue, 01 Dec 2026 10:00:00 +0000",
  "Message-ID: <q1@example.com>",
  "MIME-Version: 1.0",
  "Content-Type: multipart/mixed; boundary=outer",
  "",
  "--outer",
  "Content-Type: multipart/related; boundary=rel",
  "",
  "--rel",
  "Content-Type: multipart/alternative; boundary=alt",
  "",
  "--alt",
  "Content-Type: text/plain; charset=utf-8",
  "",
  "Hello Bob, the numbers are attached.",
  "--alt",
  "Content-Type: text/html; charset=utf-8",
  "",
  "<p>Hello <b>Bob</b>, the numbers are attached.</p><img src=\"cid:logo@example.com\">",
  "--alt--",
  "--rel",
  "Content-Type: image/png",
  "Content-ID: <logo@example.com>",
  "Content-Transfer-Encoding: base64",
  "",
  pixel.toString("base64"),
  "--rel--",
  "--outer",
  "Content-Type: text/csv; name=\"numbers.csv\"",
  "Content-Disposition: attachment; filename=\"numbers.csv\"",
  "",
  "q,revenue",
  "1,100",
  "--outer--"
)

describe("the inbox API", () => {
  it("lists a sent message, parses it, and serves its exact bytes and attachments", async () => {
    const inbox = await serve()
    await send(inbox, rich, { from: "alice@example.com", to: ["bob@example.com", "carol@example.com"] })
    const list = await getJson(inbox, "/api/messages")
    assert.strictEqual(list.status, 200)
    assert.strictEqual(list.body.total, 1)
    const summary = list.body.messages[0]
    assert.strictEqual(summary.subject, "Quarterly résumé")
    assert.deepStrictEqual(summary.from, { name: "Alice Example", address: "alice@example.com" })
    assert.deepStrictEqual(summary.envelope, { from: "alice@example.com", to: ["bob@example.com", "carol@example.com"] })
    assert.deepStrictEqual(summary.to.map((m: { address: string }) => m.address), ["bob@example.com", "carol@example.com"])
    assert.strictEqual(summary.date, "2026-12-01T10:00:00.000Z")
    assert.strictEqual(summary.snippet, "Hello Bob, the numbers are attached.")
    assert.deepStrictEqual(summary.problems, [])

    const detail = await getJson(inbox, `/api/messages/${encodeURIComponent(summary.id)}`)
    assert.strictEqual(detail.status, 200)
    const m = detail.body
    assert.strictEqual(m.text.trim(), "Hello Bob, the numbers are attached.")
    assert.include(m.html, "<b>Bob</b>")
    assert.strictEqual(m.messageId, "<q1@example.com>")
    assert.strictEqual(m.envelope.helo, "localhost")
    assert.strictEqual(m.remoteContent, false)
    assert.include(m.headers.map((h: { name: string }) => h.name), "Message-ID")
    const csv = m.attachments.find((a: { filename: string }) => a.filename === "numbers.csv")
    const logo = m.attachments.find((a: { contentId: string }) => a.contentId === "<logo@example.com>")
    assert.isDefined(csv)
    assert.isTrue(logo.related)

    const file = await fetch(inbox.url + csv.url)
    assert.strictEqual(file.status, 200)
    // postal-mime hands text parts over with local line ends; base64 parts (the logo) are exact.
    assert.strictEqual(await file.text(), "q,revenue\n1,100\n")
    const image = await fetch(inbox.url + logo.url)
    assert.deepStrictEqual(Buffer.from(await image.arrayBuffer()), pixel)
    assert.match(file.headers.get("content-disposition")!, /^attachment; filename="numbers.csv"/)

    // The HTML document has the embedded image inlined, and links open outside the frame.
    const html = await fetch(`${inbox.url}/api/messages/${encodeURIComponent(summary.id)}/html`)
    const doc = await html.text()
    assert.include(doc, `src="data:image/png;base64,${pixel.toString("base64")}"`)
    assert.include(doc, `<base target="_blank">`)

    const raw = await fetch(`${inbox.url}/api/messages/${encodeURIComponent(summary.id)}/raw`)
    const stored = fs.readFileSync(path.join(inbox.maildir, "new", summary.id))
    assert.deepStrictEqual(Buffer.from(await raw.arrayBuffer()), stored)
    assert.strictEqual(stored.toString("utf8"), rich)

    const eml = await fetch(`${inbox.url}/api/messages/${encodeURIComponent(summary.id)}/download`)
    assert.strictEqual(eml.headers.get("content-type"), "message/rfc822")
    assert.strictEqual(eml.headers.get("content-disposition"), `attachment; filename="Quarterly r_sum_.eml"; filename*=UTF-8''Quarterly%20r%C3%A9sum%C3%A9.eml`)
    assert.deepStrictEqual(Buffer.from(await eml.arrayBuffer()), stored)
  })

  it("lists newest first and searches by sender, recipient and subject", async () => {
    const inbox = await serve()
    await send(inbox, crlf("From: a@example.com", "To: x@example.com", "Subject: first", "", "1"), { from: "a@example.com", to: ["x@example.com"] })
    await send(inbox, crlf("From: b@example.com", "To: y@example.com", "Subject: second", "", "2"), { from: "b@example.com", to: ["y@example.com"] })
    await send(inbox, crlf("From: Carol <c@example.com>", "To: z@example.com", "Subject: third, about invoices", "", "3"), {
      from: "c@example.com",
      to: ["hidden@example.com"]
    })
    const subjects = async (query: string) => (await getJson(inbox, `/api/messages${query}`)).body.messages.map((m: { subject: string }) => m.subject)
    assert.deepStrictEqual(await subjects(""), ["third, about invoices", "second", "first"])
    assert.deepStrictEqual(await subjects("?from=B@EXAMPLE.COM"), ["second"])
    assert.deepStrictEqual(await subjects("?to=hidden@example.com"), ["third, about invoices"], "the envelope recipient counts")
    assert.deepStrictEqual(await subjects("?to=z@example.com"), ["third, about invoices"], "and so does the To header")
    assert.deepStrictEqual(await subjects("?to=example.com"), [], "to is a whole address")
    assert.deepStrictEqual(await subjects("?subject=INVOICE"), ["third, about invoices"])
    assert.deepStrictEqual(await subjects("?q=carol"), ["third, about invoices"])
    assert.deepStrictEqual(await subjects("?q=y@exa"), ["second"])
    assert.deepStrictEqual(await subjects("?limit=1&offset=1"), ["second"])
    const page = await getJson(inbox, "/api/messages?limit=1")
    assert.strictEqual(page.body.total, 3)
    assert.strictEqual(page.body.count, 3)
    for (const bad of ["?limit=0", "?limit=x", "?offset=-1", "?limit=1&limit=2"]) {
      const r = await getJson(inbox, `/api/messages${bad}`)
      assert.strictEqual(r.status, 400, bad)
      assert.match(r.body.error, /^bad parameter/)
    }
  })

  it("waits for a message to arrive, and answers 404 when none does in time", async () => {
    const inbox = await serve()
    const waiting = getJson(inbox, "/api/wait?to=late@example.com&timeout=20s")
    await send(inbox, crlf("Subject: not this one", "", "x"), { to: ["other@example.com"] })
    await send(inbox, crlf("Subject: the awaited one", "", "here"), { to: ["late@example.com"] })
    const found = await waiting
    assert.strictEqual(found.status, 200)
    assert.strictEqual(found.body.subject, "the awaited one")
    assert.strictEqual(found.body.text.trim(), "here")

    const present = await getJson(inbox, "/api/wait?to=other@example.com")
    assert.strictEqual(present.body.subject, "not this one", "a message already there is found at once")

    const started = Date.now()
    const none = await getJson(inbox, "/api/wait?to=nobody@example.com&timeout=300ms")
    assert.strictEqual(none.status, 404)
    assert.match(none.body.error, /no message matching to=nobody@example.com within/)
    assert.isAtLeast(Date.now() - started, 250)
    for (const bad of ["timeout=soon", "timeout=6m"]) {
      assert.strictEqual((await getJson(inbox, `/api/wait?${bad}`)).status, 400, bad)
    }
  })

  it("deletes one message and all of them, from the Maildir too", async () => {
    const inbox = await serve()
    for (const n of [1, 2, 3]) await send(inbox, crlf(`Subject: m${n}`, "", `${n}`))
    const first = await newest(inbox)
    const deleted = await fetch(`${inbox.url}/api/messages/${encodeURIComponent(first.id)}`, { method: "DELETE" })
    assert.strictEqual(deleted.status, 204)
    assert.isFalse(fs.existsSync(path.join(inbox.maildir, "new", first.id)))
    assert.strictEqual((await getJson(inbox, `/api/messages/${encodeURIComponent(first.id)}`)).status, 404)
    assert.strictEqual((await fetch(`${inbox.url}/api/messages/${encodeURIComponent(first.id)}`, { method: "DELETE" })).status, 404)
    assert.strictEqual((await getJson(inbox, "/api/messages")).body.total, 2)

    const cleared = await getJson(inbox, "/api/messages", { method: "DELETE" })
    assert.deepStrictEqual(cleared.body, { deleted: 2 })
    assert.deepStrictEqual(fs.readdirSync(path.join(inbox.maildir, "new")), [])
    assert.deepStrictEqual(fs.readdirSync(path.join(inbox.maildir, "envelopes")), [])
    assert.strictEqual((await getJson(inbox, "/api/messages")).body.total, 0)
  })

  it("keeps the mail, envelopes included, across a restart, and reads messages moved to cur/", async () => {
    const maildir = fs.mkdtempSync(path.join(tmp, "md-"))
    const before = await serve([], maildir)
    await send(before, crlf("Subject: kept", "", "still here"), { from: "keeper@example.com", to: ["k@example.com"] })
    await send(before, crlf("Subject: read by a mail client", "", "moved"))
    const ids = (await getJson(before, "/api/messages")).body.messages.map((m: { id: string }) => m.id)
    assert.strictEqual(await before.r.stop("SIGTERM"), 0)
    // A mail client marks the newer one seen: new/ID becomes cur/ID:2,S.
    fs.renameSync(path.join(maildir, "new", ids[0]), path.join(maildir, "cur", `${ids[0]}:2,S`))
    // A file another program dropped in is indexed too, without an envelope.
    fs.writeFileSync(path.join(maildir, "new", "1.dropped.host"), crlf("From: x@example.com", "Subject: dropped in", "", "hi"))

    const after = await serve([], maildir)
    const list = (await getJson(after, "/api/messages")).body
    assert.strictEqual(list.total, 3)
    const bySubject = new Map(list.messages.map((m: { subject: string }) => [m.subject, m]))
    const kept = bySubject.get("kept") as { envelope: unknown; id: string }
    assert.deepStrictEqual(kept.envelope, { from: "keeper@example.com", to: ["k@example.com"] })
    assert.isNull((bySubject.get("dropped in") as { envelope: unknown }).envelope)
    const moved = await getJson(after, `/api/messages/${encodeURIComponent(ids[0])}`)
    assert.strictEqual(moved.body.text.trim(), "moved")
  })

  it("streams changes as server-sent events", async () => {
    const inbox = await serve()
    const response = await fetch(`${inbox.url}/api/events`)
    assert.strictEqual(response.headers.get("content-type"), "text/event-stream")
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
    let buffer = ""
    const nextEvent = async (): Promise<{ event: string; data: any }> => {
      for (;;) {
        const end = buffer.indexOf("\n\n")
        if (end >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const event = /^event: (.*)$/m.exec(block)?.[1]
          const data = /^data: (.*)$/m.exec(block)?.[1]
          if (event !== undefined && data !== undefined) return { event, data: JSON.parse(data) }
          continue
        }
        const { done, value } = await reader.read()
        if (done) throw new Error("the event stream ended")
        buffer += value
      }
    }
    await send(inbox, crlf("Subject: live", "", "x"))
    const received = await nextEvent()
    assert.strictEqual(received.event, "received")
    assert.strictEqual(received.data.subject, "live")
    await fetch(`${inbox.url}/api/messages/${encodeURIComponent(received.data.id)}`, { method: "DELETE" })
    assert.deepStrictEqual(await nextEvent(), { event: "deleted", data: { id: received.data.id } })
    await fetch(`${inbox.url}/api/messages`, { method: "DELETE" })
    assert.deepStrictEqual(await nextEvent(), { event: "cleared", data: {} })
    await reader.cancel()
  })

  it("shuts down at once with a page and a waiting test connected", async () => {
    const inbox = await serve()
    const events = await fetch(`${inbox.url}/api/events`)
    const waiting = getJson(inbox, "/api/wait?to=never@example.com&timeout=60s")
    await new Promise((resolve) => setTimeout(resolve, 200)) // let the wait reach the server
    const started = Date.now()
    assert.strictEqual(await inbox.r.stop("SIGTERM"), 0)
    assert.isBelow(Date.now() - started, 10_000)
    const answer = await waiting
    assert.strictEqual(answer.status, 503)
    // The event stream has ended (cleanly, or cut: either way it does not hang).
    const reader = events.body!.getReader()
    const ended = async (): Promise<void> => {
      const r = await reader.read()
      if (!r.done) return ended()
    }
    await ended().catch(() => undefined)
  })
})

describe("access to the inbox", () => {
  it("answers only to loopback host names without a password (no DNS rebinding)", async () => {
    const inbox = await serve()
    const port = new URL(inbox.url).port
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `app.localhost:${port}`]) {
      const r = await rawGet(inbox, host)
      assert.match(r, /^HTTP\/1.1 200/, host)
    }
    const evil = await rawGet(inbox, `attacker.example:${port}`)
    assert.match(evil, /^HTTP\/1.1 403/)
  })

  it("with --http-auth, every request needs the password", async () => {
    const inbox = await serve(["--http-auth", "ann:hunter2"])
    const none = await fetch(`${inbox.url}/api/messages`)
    assert.strictEqual(none.status, 401)
    assert.match(none.headers.get("www-authenticate")!, /^Basic realm=/)
    const authorization = (s: string) => ({ authorization: `Basic ${Buffer.from(s).toString("base64")}` })
    assert.strictEqual((await fetch(`${inbox.url}/api/messages`, { headers: authorization("ann:wrong") })).status, 401)
    assert.strictEqual((await fetch(`${inbox.url}/`, { headers: authorization("ann:hunter2") })).status, 200)
    assert.strictEqual((await fetch(`${inbox.url}/api/messages`, { headers: authorization("ann:hunter2") })).status, 200)
    assert.notInclude(inbox.r.stderr(), "hunter2")
  })

  it("refuses to listen beyond loopback without a password, and bad --http flags", async () => {
    const refusals = await Promise.all([
      ["serve", "--http", "0.0.0.0:0"],
      ["serve", "--http", "nonsense"],
      ["serve", "--http", "127.0.0.1:0", "--http-auth", "nopassword"],
      ["serve", "--http-auth", "a:b"]
    ].map(async (args) => ({ args, ...await Cli.run(args) })))
    for (const { args, code, stderr } of refusals) {
      assert.strictEqual(code, 2, `${args.join(" ")}: ${stderr}`)
      assert.isAbove(stderr.length, 0)
    }
    assert.include(refusals[0]!.stderr, "--http-auth")
  })

  it("says why when the inbox's port is taken", async () => {
    const net = await import("node:net")
    const taken = net.createServer()
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve))
    const port = (taken.address() as { port: number }).port
    const { code, stderr } = await Cli.run(["serve", "--listen", "127.0.0.1:0", "--http", `127.0.0.1:${port}`, "--maildir", path.join(tmp, "taken")])
    taken.close()
    assert.strictEqual(code, 1)
    assert.include(stderr, `cannot listen on 127.0.0.1:${port}: listen EADDRINUSE`)
  })
})

/** A GET with a Host header of our choosing (fetch does not allow setting it). */
const rawGet = async (inbox: Inbox, host: string): Promise<string> => {
  const net = await import("node:net")
  const { hostname, port } = new URL(inbox.url)
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => {
      socket.write(`GET /api/messages HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
    })
    let data = ""
    socket.setEncoding("utf8").on("data", (c: string) => (data += c)).on("end", () => resolve(data)).on("error", reject)
  })
}

describe("hostile mail", () => {
  let inbox: Inbox
  beforeAll(async () => {
    inbox = await start(fs.mkdtempSync(path.join(tmp, "hostile-")))
  })
  afterAll(() => inbox.r.stop("SIGKILL"))

  /** Sends `body` to a fresh address, and returns the API's view of it (and its summary). */
  const deliver = async (body: string | Uint8Array) => {
    const to = `r${Math.random().toString(36).slice(2)}@example.com`
    await send(inbox, body, { to: [to] })
    const summary = (await getJson(inbox, `/api/messages?to=${to}`)).body.messages[0]
    const detail = await getJson(inbox, `/api/messages/${encodeURIComponent(summary.id)}`)
    assert.strictEqual(detail.status, 200)
    const raw = Buffer.from(await (await fetch(`${inbox.url}/api/messages/${encodeURIComponent(summary.id)}/raw`)).arrayBuffer())
    assert.deepStrictEqual(raw, Buffer.from(body), "the source is always the exact bytes")
    return { summary, message: detail.body }
  }

  it("malformed MIME: unterminated multipart, broken base64, unknown encodings, no boundary", async () => {
    const broken = await deliver(crlf(
      "Subject: broken",
      "Content-Type: multipart/mixed; boundary=\"zzz\"",
      "",
      "--zzz",
      "Content-Type: text/plain",
      "",
      "part one",
      "--zzz",
      "Content-Type: application/pdf; name=x.pdf",
      "Content-Transfer-Encoding: base64",
      "",
      "!!!not base64 at all@@@",
      "--zzz",
      "Content-Type: text/plain",
      "Content-Transfer-Encoding: x-martian",
      "",
      "part three, never closed"
    ))
    assert.strictEqual(broken.summary.subject, "broken")
    assert.include(broken.message.text, "part one")
    const boundaryless = await deliver(crlf("Subject: no boundary", "Content-Type: multipart/mixed", "", "just stuff"))
    assert.strictEqual(boundaryless.summary.subject, "no boundary")
  })

  it("parts nested deeper than the parser's limit", async () => {
    const depth = 150
    const open = Array.from({ length: depth }, (_, i) => `Content-Type: multipart/mixed; boundary=b${i}\r\n\r\n--b${i}\r\n`).join("")
    const close = Array.from({ length: depth }, (_, i) => `\r\n--b${depth - 1 - i}--`).join("")
    const nested = await deliver(`Subject: deep\r\n${open}Content-Type: text/plain\r\n\r\nbottom${close}\r\n`)
    assert.strictEqual(nested.summary.problems.length, 1)
    assert.match(nested.summary.problems[0], /could not be parsed/)
  })

  it("a huge header is refused by the parser but the message stays readable as source", async () => {
    const folded = Array.from({ length: 3500 }, () => " " + "x".repeat(900)).join("\r\n")
    const huge = await deliver(`X-Huge:${folded}\r\nSubject: huge\r\n\r\nbody\r\n`)
    assert.match(huge.summary.problems[0], /could not be parsed: Maximum header size/)
    assert.isNull(huge.message.text)
    const html = await fetch(`${inbox.url}/api/messages/${encodeURIComponent(huge.summary.id)}/html`)
    assert.strictEqual(html.status, 404)
    // Large but within the limit: parsed.
    const long = "word ".repeat(20_000).trim()
    const big = await deliver(crlf(`Subject: ${long.replace(/(.{900}) /g, "$1\r\n ")}`, "", "x"))
    assert.strictEqual(big.summary.subject, long)
  })

  it("HTML with scripts and remote images gets a policy that runs and fetches nothing", async () => {
    const html = await deliver(crlf(
      "Subject: tracking you",
      "Content-Type: multipart/mixed; boundary=b",
      "",
      "--b",
      "Content-Type: text/html",
      "",
      "<script>fetch('https://tracker.example/js')</script>",
      "<img src=\"https://tracker.example/pixel.gif\" onerror=\"alert(1)\"><a href=\"javascript:alert(2)\">x</a>",
      "--b",
      "Content-Type: text/html; name=page.html",
      "Content-Disposition: attachment; filename=page.html",
      "",
      "<script>alert(3)</script>",
      "--b--"
    ))
    assert.isTrue(html.message.remoteContent)
    const doc = await fetch(`${inbox.url}/api/messages/${encodeURIComponent(html.summary.id)}/html`)
    const policy = doc.headers.get("content-security-policy")!
    assert.strictEqual(
      policy,
      "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; form-action 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
    )
    assert.notInclude(policy, "script-src")
    assert.notInclude(policy, "allow-scripts")
    assert.notInclude(policy, "allow-same-origin")
    const remote = await fetch(`${inbox.url}/api/messages/${encodeURIComponent(html.summary.id)}/html?remote=1`)
    assert.include(remote.headers.get("content-security-policy")!, "img-src data: https: http:")
    assert.notInclude(remote.headers.get("content-security-policy")!, "script")
    // An HTML attachment is downloaded, never shown as a page of the inbox.
    const page = html.message.attachments.find((a: { filename: string }) => a.filename === "page.html")
    const attachment = await fetch(inbox.url + page.url)
    assert.match(attachment.headers.get("content-disposition")!, /^attachment;/)
    assert.strictEqual(attachment.headers.get("content-security-policy"), "default-src 'none'; sandbox")
    assert.strictEqual(attachment.headers.get("x-content-type-options"), "nosniff")
  })

  it("non-UTF-8 charsets: Latin-1, Windows-1251, ISO-2022-JP, Shift_JIS, an unknown one, raw 8-bit headers", async () => {
    const latin1 = await deliver(Buffer.concat([
      Buffer.from(crlf(
        "Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?=",
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: 8bit",
        ""
      )),
      Buffer.from("Un caf\xe9, s'il vous pla\xeet.\r\n", "latin1")
    ]))
    assert.strictEqual(latin1.summary.subject, "Café crème")
    assert.strictEqual(latin1.message.text.trim(), "Un café, s'il vous plaît.")

    const cyrillic = await deliver(crlf(
      "Subject: =?windows-1251?B?z/Do4uXy?=",
      "Content-Type: text/plain; charset=windows-1251",
      "Content-Transfer-Encoding: quoted-printable",
      "",
      "=CF=F0=E8=E2=E5=F2, =EC=E8=F0"
    ))
    assert.strictEqual(cyrillic.summary.subject, "Привет")
    assert.strictEqual(cyrillic.message.text.trim(), "Привет, мир")

    const japanese = await deliver(crlf(
      "Subject: =?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=",
      "Content-Type: text/plain; charset=shift_jis",
      "Content-Transfer-Encoding: base64",
      "",
      Buffer.from([0x82, 0xb1, 0x82, 0xf1, 0x82, 0xc9, 0x82, 0xbf, 0x82, 0xcd]).toString("base64")
    ))
    assert.strictEqual(japanese.summary.subject, "テスト")
    assert.strictEqual(japanese.message.text.trim(), "こんにちは")

    const unknown = await deliver(Buffer.concat([
      Buffer.from(crlf("Subject: unknown charset", "Content-Type: text/plain; charset=x-no-such-charset", "")),
      Buffer.from("abc \xe9\r\n", "latin1")
    ]))
    assert.include(unknown.message.text, "abc")

    const raw8bit = await deliver(Buffer.concat([Buffer.from("Subject: Caf"), Buffer.from([0xe9]), Buffer.from("\r\n\r\nbody\r\n")]))
    assert.match(raw8bit.summary.subject, /^Caf.$/)
  })

  it("a message that is not MIME at all, an empty one, and binary noise", async () => {
    const plain = await deliver("hello world\r\nno headers here\r\n")
    assert.strictEqual(plain.message.text, "hello world\r\nno headers here\r\n")
    assert.match(plain.summary.problems[0], /no header section/)
    assert.strictEqual(plain.summary.snippet, "hello world no headers here")

    const empty = await deliver("")
    assert.strictEqual(empty.summary.size, 0)
    assert.deepStrictEqual(empty.summary.problems, ["The message is empty."])

    const noise = Buffer.from(Array.from({ length: 4000 }, (_, i) => {
      const b = (i * 7919 + 13) % 256
      return b === 10 || b === 13 ? 32 : b
    }))
    const binary = await deliver(Buffer.concat([noise, Buffer.from("\r\n")]))
    assert.isString(binary.message.text)
  })

  it("hostile names and ids cannot escape: attachment file names, path traversal", async () => {
    const named = await deliver(crlf(
      "Subject: names",
      "Content-Type: multipart/mixed; boundary=b",
      "",
      "--b",
      "Content-Type: application/octet-stream",
      "Content-Disposition: attachment; filename=\"../../etc/passwd\\\"; x=\"",
      "",
      "a",
      "--b",
      "Content-Type: application/octet-stream",
      "Content-Disposition: attachment; filename=\"=?UTF-8?Q?evil=0D=0ASet-Cookie:_x=3D1.txt?=\"",
      "",
      "b",
      "--b--"
    ))
    for (const a of named.message.attachments) {
      const r = await fetch(inbox.url + a.url)
      assert.strictEqual(r.status, 200)
      assert.match(r.headers.get("content-disposition")!, /^attachment; filename="[\x20-\x7e]*"; filename\*=UTF-8''[A-Za-z0-9%._~!*'()-]*$/)
      assert.isNull(r.headers.get("set-cookie"))
    }
    for (const id of ["..%2F..%2Fenvelopes", "%2e%2e", "..", "new", `${named.summary.id}%00`]) {
      const r = await getJson(inbox, `/api/messages/${id}`)
      assert.strictEqual(r.status, 404, id)
    }
  })
})
