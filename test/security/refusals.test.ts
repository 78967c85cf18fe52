/**
 * Refusing the way Postfix does, over the wire: lines that are not SMTP (221 2.7.0, closed),
 * unauthorised pipelining (554 5.5.0, closed, nothing stored), BDAT that cannot be framed,
 * was not negotiated or cannot fit (521 / 552, closed, the chunk never read), the line rules of
 * BDAT text, over-long command lines answered at once, HELO names that are not printable.
 *
 * Where framing is involved each case is delivered in one write, a byte per write, and cut in two
 * at every point. In memory every write is one read of the server, so the outcome of each split
 * is known exactly; over TCP the kernel may join writes, so a test there accepts what either
 * framing gives, and checks that the outcome and what was stored agree.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import { TestClock } from "effect/testing"
import * as Sasl from "../../src/Sasl.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import type { Transport } from "../../src/Transport.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, envelope, type Net, replies, show, start, type StartOptions, type TestServer } from "../support/server.ts"
import { codes, type Delivery, deliveries, fromLatin1, memoryAttack, servesNormally, settle, tcpAttack, toLatin1 } from "./support/hostile.ts"
import { parseTranscript } from "./support/transcript.ts"

/** What the server said to one delivery, until it hung up (in memory on the TestClock). */
const said = (net: Net, s: TestServer, d: Delivery) =>
  net === "memory"
    ? memoryAttack(s, d.chunks, { paced: true })
    : Effect.map(tcpAttack(s.endpoint, d.chunks, { halfClose: false, timeoutMs: 10_000 }), (o) => {
      assert.strictEqual(o.end, "closed", `${d.name}: ${o.text}`)
      return o.text
    })

/** Every transcript meets the standard of the hostile-input tests, closing replies included. */
const checked = (text: string, what: string) => {
  const t = parseTranscript(text, { complete: true, closedByServer: true })
  assert.deepStrictEqual(t.problems, [], `${what}: ${text}`)
  return codes(text)
}

/** Hands everything a connection receives to `f` (one char per byte), until it ends. */
const readInto = (t: Transport, f: (text: string) => void): Effect.Effect<void> =>
  Effect.gen(function*() {
    while (true) {
      const chunk = yield* t.read.pipe(Effect.orElseSucceed(() => undefined))
      if (chunk === undefined) return
      f(toLatin1(chunk))
    }
  })

/** Memory tests run on the TestClock, TCP ones in real time. */
const test = (net: Net) => net === "memory" ? it.effect : it.live

/** TCP: fewer cut points (each is a connection). */
const cutEvery = (net: Net) => net === "memory" ? 1 : 7

const server = (net: Net, options: Partial<StartOptions> = {}) =>
  Effect.gen(function*() {
    const backend = makeBackend()
    const s = yield* start({ net, backend: backend.layer, ...options })
    return { s, rec: backend.rec }
  })

describe.each<Net>(["memory", "tcp"])("a line that is not SMTP, over %s", (net) => {
  const foreign = [
    "GET / HTTP/1.1",
    "POST /submit HTTP/1.1",
    "CONNECT mx.example:25 HTTP/1.1",
    "head / HTTP/1.0",
    "OPTIONS * HTTP/1.1",
    "PRI * HTTP/2.0",
    "Subject: hello",
    "From: <ceo@example.com>",
    "X-Mailer:Outlook",
    "\x16\x03\x01\x00\xa5\x01",
    "<html>",
    "1 MAIL FROM:<a@b.example>"
  ]

  test(net)("221 2.7.0 at once, after the replies already owed; the rest never runs", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net)
      for (const [i, line] of foreign.entries()) {
        const text = `EHLO c.example\r\n${line}\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n`
        // Every framing for a few of them, one write for the rest.
        const ways = i < 3 || i === 6 ? deliveries(text, { cutEvery: cutEvery(net) }) : deliveries(text).slice(0, 1)
        for (const d of ways) {
          assert.deepStrictEqual(checked(yield* said(net, s, d), d.name), ["220", "250", "221 2.7.0"], `${JSON.stringify(line)}, ${d.name}`)
        }
      }
      assert.notInclude(rec.events.join(), "mail:")
      yield* Effect.scoped(servesNormally(s, rec))
    }))

  test(net)("message content taken for commands (DATA refused, the body sent anyway): the first header line hangs up", () =>
    Effect.gen(function*() {
      // (With unauthorised pipelining refused, DATA would end it first: that is the next suite.)
      const { s, rec } = yield* server(net, { forbidUnauthorizedPipelining: false })
      const text = "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nDATA\r\nSubject: pay now\r\nMAIL FROM:<evil@example.net>\r\n"
      for (const d of deliveries(text, { cutEvery: 11 })) {
        assert.deepStrictEqual(checked(yield* said(net, s, d), d.name), ["220", "250", "250 2.1.0", "503 5.5.1", "221 2.7.0"], d.name)
      }
      assert.notInclude(rec.events, "mail:evil@example.net")
    }))

  test(net)("refuseNonSmtp off: such lines are unknown commands again; forbiddenCommands names the verbs", () =>
    Effect.gen(function*() {
      const off = yield* server(net, { refuseNonSmtp: false })
      const text = "GET / HTTP/1.1\r\nSubject: x\r\n<html>\r\nQUIT\r\n"
      assert.deepStrictEqual(checked(yield* said(net, off.s, deliveries(text)[0]!), "off"), ["220", "500 5.5.2", "500 5.5.2", "500 5.5.2", "221 2.0.0"])
      const custom = yield* server(net, { forbiddenCommands: ["xyzzy"] })
      const t2 = "GET / HTTP/1.1\r\nXYZZY now\r\nNOOP\r\n"
      assert.deepStrictEqual(checked(yield* said(net, custom.s, deliveries(t2)[0]!), "custom"), ["220", "500 5.5.2", "221 2.7.0"])
      // Known verbs are never refused as foreign, whatever the list says.
      const known = yield* server(net, { forbiddenCommands: ["NOOP"] })
      assert.deepStrictEqual(checked(yield* said(net, known.s, deliveries("NOOP\r\nQUIT\r\n")[0]!), "known"), ["220", "250 2.0.0", "221 2.0.0"])
    }))
})

describe.each<Net>(["memory", "tcp"])("unauthorised pipelining, over %s", (net) => {
  const envelopeAndData = "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
  const body = "Subject: hi\r\n\r\nhello\r\n"
  const refused = ["220", "250", "250 2.1.0", "250 2.1.5", "554 5.5.0"]
  const served = ["220", "250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]

  test(net)("input behind DATA before the 354: 554 5.5.0 and closed, nothing stored; a client that waited is served", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net)
      const text = envelopeAndData + body + ".\r\nQUIT\r\n"
      for (const d of deliveries(text, { cutEvery: cutEvery(net) })) {
        const before = { messages: rec.messages.length, data: rec.events.filter((e) => e === "data").length }
        const got = checked(yield* said(net, s, d), d.name)
        const waited = d.name === "one byte per write" || d.name === `cut at ${envelopeAndData.length}`
        if (net === "memory") assert.deepStrictEqual(got, waited ? served : refused, d.name)
        else assert.include([refused.join(), served.join()], got.join(), d.name)
        const stored = rec.messages.slice(before.messages)
        if (got.join() === refused.join()) {
          // Nothing of the transaction reached the backend's data: not even a partial body.
          assert.strictEqual(stored.length, 0)
          assert.strictEqual(rec.events.filter((e) => e === "data").length, before.data)
        } else {
          assert.deepStrictEqual(stored.map((m) => m.body), [body])
        }
      }
    }))

  test(net)("a HELO session may not pipeline at all; one command at a time is served", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net)
      const text = "HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nQUIT\r\n"
      assert.deepStrictEqual(checked(yield* said(net, s, deliveries(text)[0]!), "one write"), ["220", "554 5.5.0"])
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "HELO c.example", "MAIL FROM:<a@b.example>"), ["250", "250 2.1.0"])
      yield* p.write("RCPT TO:<c@d.example>\r\nDATA\r\n")
      assert.deepStrictEqual(yield* replies(p, 1), ["554 5.5.0"])
      assert.isTrue(yield* p.closed)
      assert.notInclude(rec.events, "rcpt:c@d.example")
    }))

  test(net)("EHLO where PIPELINING is off: the same; where it is on, a whole group is fine (RFC 2920)", () =>
    Effect.gen(function*() {
      const off = yield* server(net, { extensions: { pipelining: false } })
      const p = yield* off.s.open()
      assert.notInclude((yield* p.command("EHLO c.example")).lines, "PIPELINING")
      yield* p.write("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
      assert.deepStrictEqual(yield* replies(p, 1), ["554 5.5.0"])
      assert.isTrue(yield* p.closed)
      const on = yield* server(net)
      const group = "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\nDATA\r\n"
      const q = yield* on.s.connect()
      yield* q.write(group)
      assert.deepStrictEqual(yield* replies(q, 6), ["220", "250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354"])
      assert.deepStrictEqual(yield* dialog(q, "hi\r\n.", "QUIT"), ["250 2.0.0", "221 2.0.0"])
      assert.strictEqual(on.rec.messages.length, 1)
    }))

  test(net)("forbidUnauthorizedPipelining off: the body behind DATA is read as the body", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net, { forbidUnauthorizedPipelining: false })
      const text = envelopeAndData + body + ".\r\nQUIT\r\n"
      assert.deepStrictEqual(checked(yield* said(net, s, deliveries(text)[0]!), "one write"), served)
      assert.deepStrictEqual(rec.messages.map((m) => m.body), [body])
    }))

  test(net)("LMTP: the same rules after LHLO", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net, { protocol: "lmtp" })
      const text = envelopeAndData.replace("EHLO", "LHLO") + body + ".\r\nQUIT\r\n"
      assert.deepStrictEqual(checked(yield* said(net, s, deliveries(text)[0]!), "one write"), refused)
      assert.strictEqual(rec.messages.length, 0)
    }))
})

describe("talking before the greeting (greetingDelay)", () => {
  it.effect("in memory: a client that talks first gets 554 5.5.0 and no greeting; one that waits is greeted after the delay", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server("memory", { greetingDelay: "5 seconds" })
      const early = yield* memoryAttack(s, [fromLatin1("EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n")])
      assert.deepStrictEqual(checked(early, "early"), ["554 5.5.0"])
      assert.notInclude(rec.events.join(), "mail:")
      yield* Effect.scoped(Effect.gen(function*() {
        const t = yield* Effect.orDie(s.network.connect({ endpoint: s.endpoint }))
        let text = ""
        yield* Effect.forkScoped(readInto(t, (chunk) => void (text += chunk)))
        yield* settle
        yield* TestClock.adjust("4 seconds")
        yield* settle
        assert.strictEqual(text, "")
        yield* TestClock.adjust("1 second")
        yield* settle
        assert.match(text, /^220 /)
      }))
    }))

  it.live("over TCP: the same in real time", () =>
    Effect.gen(function*() {
      const { s } = yield* server("tcp", { greetingDelay: "300 millis" })
      const early = yield* tcpAttack(s.endpoint, [fromLatin1("EHLO c.example\r\n")], { halfClose: false, timeoutMs: 10_000 })
      assert.deepStrictEqual(checked(early.text, "early"), ["554 5.5.0"])
      const started = Date.now()
      const p = yield* s.open()
      assert.isAtLeast(Date.now() - started, 250)
      assert.strictEqual(show(yield* p.command("EHLO c.example")), "250")
    }))

  it.effect("without forbidUnauthorizedPipelining the early bytes are just read after the greeting", () =>
    Effect.gen(function*() {
      const { s } = yield* server("memory", { greetingDelay: "5 seconds", forbidUnauthorizedPipelining: false })
      const text = yield* memoryAttack(s, [fromLatin1("NOOP\r\nQUIT\r\n")])
      assert.deepStrictEqual(checked(text, "lenient"), ["220", "250 2.0.0", "221 2.0.0"])
    }))
})

describe.each<Net>(["memory", "tcp"])("BDAT framing, over %s", (net) => {
  test(net)("where CHUNKING was not negotiated (before any hello, a HELO session, CHUNKING off): 521 5.5.1 and closed", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net)
      const before = "BDAT 24 LAST\r\nMAIL FROM:<evil@x.example>\r\n"
      for (const d of deliveries(before, { cutEvery: cutEvery(net) * 3 })) {
        assert.deepStrictEqual(checked(yield* said(net, s, d), d.name), ["220", "521 5.5.1"], d.name)
      }
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "HELO c", "MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>", "BDAT 3 LAST"), [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "521 5.5.1"
      ])
      assert.isTrue(yield* p.closed)
      assert.notInclude(rec.events.join(), "mail:evil")
    }))

  test(net)("a chunk too large for the message: 552 5.3.4 at once and closed, without reading it", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net, { maxMessageBytes: 1000 })
      for (const head of ["", "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"]) {
        const p = yield* s.connect()
        yield* p.write(`EHLO c\r\n${head.replace("EHLO c\r\n", "")}BDAT 1000000000000 LAST\r\n`)
        const readBefore = s.tap.bytesRead
        const got = yield* replies(p, head === "" ? 3 : 5)
        assert.strictEqual(got.at(-1), "552 5.3.4")
        // The gigabytes that would follow are never waited for: the reply comes before them.
        yield* p.write("x".repeat(64 * 1024)).pipe(Effect.ignore)
        assert.isTrue(yield* p.closed.pipe(Effect.orElseSucceed(() => true)))
        assert.isBelow(s.tap.bytesRead - readBefore, 2 * 1024 * 1024)
      }
      assert.strictEqual(rec.messages.length, 0)
      // Exactly the limit is still fine.
      const q = yield* s.open()
      yield* envelope(q)
      yield* q.write(`BDAT 1000 LAST\r\n${"y".repeat(998)}\r\n`)
      assert.strictEqual(show(yield* q.reply), "250 2.0.0")
    }))

  test(net)("the text of a BDAT message: bare CR or LF under each policy, BINARYMIME exempt, whatever the framing", () =>
    Effect.gen(function*() {
      const chunks = (parts: ReadonlyArray<string>) =>
        parts.map((c, i) => `BDAT ${c.length}${i === parts.length - 1 ? " LAST" : ""}\r\n${c}`).join("")
      const head = "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
      // A CRLF cut between chunks is not bare; the LF in the second chunk is.
      const parts = ["a\r", "\nb\nc", "d\r\n"]
      for (const policy of ["reject", "normalize", "allow"] as const) {
        const { s, rec } = yield* server(net, { bareLineEndings: policy })
        const text = head + chunks(parts) + "QUIT\r\n"
        for (const d of deliveries(text, { cutEvery: net === "memory" ? 3 : 13 })) {
          const before = rec.messages.length
          const got = checked(yield* said(net, s, d), `${policy} ${d.name}`)
          const expected = policy === "reject"
            // refused at the chunk it is in; the last chunk then has no transaction
            ? ["220", "250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "550 5.5.2", "503 5.5.1", "221 2.0.0"]
            : ["220", "250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0", "250 2.0.0", "221 2.0.0"]
          assert.deepStrictEqual(got, expected, `${policy} ${d.name}`)
          const stored = rec.messages.slice(before).map((m) => m.body)
          if (policy === "reject") assert.deepStrictEqual(stored, [])
          else assert.deepStrictEqual(stored, [policy === "normalize" ? "a\r\nb\r\ncd\r\n" : parts.join("")])
        }
      }
      const binary = yield* server(net, { extensions: { binaryMime: true } })
      const p = yield* binary.s.open()
      yield* dialog(p, "EHLO c", "MAIL FROM:<a@b.example> BODY=BINARYMIME", "RCPT TO:<c@d.example>")
      yield* p.write(chunks(parts))
      assert.deepStrictEqual(yield* replies(p, 3), ["250 2.0.0", "250 2.0.0", "250 2.0.0"])
      assert.strictEqual(binary.rec.messages[0]!.body, parts.join(""))
    }))
})

describe.each<Net>(["memory", "tcp"])("command lines, over %s", (net) => {
  it.live("an over-long line is answered as soon as the limit is crossed, long before any LF", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net, { maxLineLength: 64 })
      const p = yield* s.open()
      yield* p.write("NOOP " + "x".repeat(200)) // no CRLF, ever
      assert.strictEqual(show(yield* p.reply), "500 5.5.2")
      assert.isTrue(yield* p.closed)
      // An AUTH line may run to 12288 bytes (RFC 4954): it waits for its line end.
      const auth = makeBackend({ auth: Sasl.serverMechanisms({ password: Sasl.passwordVerifier(() => Effect.succeed(Redacted.make("pass"))) }) })
      const a = yield* start({ net, backend: auth.layer, maxLineLength: 64, allowInsecureAuth: true })
      const q = yield* a.open()
      yield* q.command("EHLO c")
      const response = Buffer.from(`\0user\0${"p".repeat(100)}`).toString("base64")
      yield* q.write(`AUTH PLAIN ${response}`)
      yield* q.write("\r\n")
      assert.strictEqual(show(yield* q.reply), "535 5.7.8")
      yield* Effect.scoped(servesNormally(s, rec))
    }))

  test(net)("a byte at a time: nothing until the limit, the reply at the byte that crosses it", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net, { maxLineLength: 40 })
      const text = "NOOP " + "y".repeat(100)
      // The line is refused once 40 bytes are buffered without an LF: whatever the framing.
      for (const d of deliveries(text, { cutEvery: cutEvery(net) * 3 })) {
        assert.deepStrictEqual(checked(yield* said(net, s, d), d.name), ["220", "500 5.5.2"], d.name)
      }
      if (net === "memory") {
        yield* Effect.scoped(Effect.gen(function*() {
          const t = yield* Effect.orDie(s.network.connect({ endpoint: s.endpoint }))
          let text2 = ""
          yield* Effect.forkScoped(readInto(t, (chunk) => void (text2 += chunk)))
          yield* settle
          for (let i = 0; i < 39; i++) {
            yield* t.write("z")
            yield* settle
          }
          assert.notInclude(text2, "500")
          yield* t.write("z")
          yield* settle
          assert.include(text2, "500 5.5.2")
        }))
      }
    }))

  it.live("a control character in the HELO/EHLO/LHLO argument: 501 5.5.4, and the session goes on", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net)
      const p = yield* s.open()
      for (const c of ["\x01", "\x1b", "\x7f", "\x08"]) {
        yield* p.write(fromLatin1(`EHLO mx${c}.example\r\n`))
        assert.strictEqual(show(yield* p.reply), "501 5.5.4")
      }
      yield* p.write(fromLatin1("HELO a\x07b\r\n"))
      assert.strictEqual(show(yield* p.reply), "501 5.5.4")
      assert.strictEqual(show(yield* p.command("EHLO mx.example")), "250")
    }))

  it.live("the name echoed in the HELO and EHLO reply is printable ASCII and at most 255 characters", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net, { maxLineLength: 5000 })
      const p = yield* s.open()
      yield* p.write(fromLatin1("EHLO \xff\xfe.ex\xe4mple\r\n"))
      const ehlo = yield* p.reply
      assert.strictEqual(ehlo.lines[0], "localhost Hello ??.ex?mple")
      const long = "a".repeat(1000)
      assert.strictEqual((yield* p.command(`HELO ${long}`)).lines[0], `localhost Hello ${"a".repeat(255)}`)
      // The backend still sees the name as given.
      assert.strictEqual(rec.sessions[0]!.helo(), long)
    }))
})

describe.each<Net>(["memory", "tcp"])("body lines (maxBodyLineLength), over %s", (net) => {
  test(net)("a line over the limit: 550 5.6.0 after the real end of the body, which is read to it; the next command is a command", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net, { maxBodyLineLength: 10 })
      const head = "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
      const stuffed = "0123456789\r\n..123456789\r\n" // the stuffing dot counts: 11 bytes as sent
      for (const [content, verdict] of [["0123456789\r\nabc\r\n", "250 2.0.0"], ["01234567890\r\n", "550 5.6.0"], [stuffed, "550 5.6.0"]] as const) {
        // DATA: each write after its reply, so that the body is not pipelined.
        const p = yield* s.open()
        yield* envelope(p)
        assert.strictEqual(show(yield* p.command("DATA")), "354")
        const d = deliveries(content + ".\r\nNOOP\r\n", { cutEvery: 5 })
        const delivery = d[(content.length * 7) % d.length]!
        for (const chunk of delivery.chunks) yield* p.write(chunk)
        assert.deepStrictEqual(yield* replies(p, 2), [verdict, "250 2.0.0"], content)
      }
      // BDAT, whatever the framing.
      for (const d of deliveries(head + "BDAT 6\r\nabcdef" + "BDAT 7 LAST\r\nghijk\r\n" + "QUIT\r\n", { cutEvery: cutEvery(net) * 2 })) {
        assert.deepStrictEqual(checked(yield* said(net, s, d), d.name), ["220", "250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "550 5.6.0", "221 2.0.0"], d.name)
      }
      assert.deepStrictEqual(rec.messages.map((m) => m.body), ["0123456789\r\nabc\r\n"])
    }))

  test(net)("BINARYMIME is exempt; 0 lifts the limit", () =>
    Effect.gen(function*() {
      const binary = yield* server(net, { maxBodyLineLength: 10, extensions: { binaryMime: true } })
      const p = yield* binary.s.open()
      yield* dialog(p, "EHLO c", "MAIL FROM:<a@b.example> BODY=BINARYMIME", "RCPT TO:<c@d.example>")
      yield* p.write(`BDAT 50 LAST\r\n${"b".repeat(50)}`)
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      const lifted = yield* server(net, { maxBodyLineLength: 0 })
      const q = yield* lifted.s.open()
      yield* envelope(q)
      assert.deepStrictEqual(yield* dialog(q, "DATA", "x".repeat(3 * 1024 * 1024) + "\r\n."), ["354", "250 2.0.0"])
    }))
})

describe("the default body line limit (1 MiB)", () => {
  it.live("a line of exactly 1 MiB is accepted, one byte more is 550 5.6.0", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server("memory")
      const MiB = 1024 * 1024
      for (const [n, verdict] of [[MiB, "250 2.0.0"], [MiB + 1, "550 5.6.0"]] as const) {
        const p = yield* s.open()
        yield* envelope(p)
        assert.deepStrictEqual(yield* dialog(p, "DATA", "l".repeat(n) + "\r\n."), ["354", verdict])
      }
      assert.strictEqual(rec.messages.length, 1)
    }))
})

describe.each<Net>(["memory", "tcp"])("left open last time, over %s", (net) => {
  test(net)("bareLineEndings normalize: the stuffing dot after a bare LF is removed too, whatever the framing", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* server(net, { bareLineEndings: "normalize", forbidUnauthorizedPipelining: false })
      const text = "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n" + "a\n..b\n.\n..\r\n.\r\nQUIT\r\n"
      for (const d of deliveries(text, { cutEvery: cutEvery(net) * 2 })) {
        const before = rec.messages.length
        assert.deepStrictEqual(checked(yield* said(net, s, d), d.name), ["220", "250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"])
        // ".b" unstuffed; the lone "." after a bare LF is content (and never an end); "." again.
        assert.strictEqual(rec.messages[before]!.body, "a\r\n.b\r\n.\r\n.\r\n", d.name)
      }
    }))

  it.live("an over-long SASL response: 500 5.5.6 and the session goes on; far too long, 500 5.5.2 and closed", () =>
    Effect.gen(function*() {
      const backend = makeBackend({ auth: Sasl.serverMechanisms({ password: Sasl.passwordVerifier(() => Effect.succeed(Redacted.make("pass"))) }) })
      const s = yield* start({ net, backend: backend.layer, allowInsecureAuth: true })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      assert.strictEqual(show(yield* p.command("AUTH LOGIN")), "334")
      assert.strictEqual(show(yield* p.command("A".repeat(20_000))), "500 5.5.6")
      assert.deepStrictEqual(yield* dialog(p, "NOOP", `AUTH PLAIN ${Buffer.from("\0user\0pass").toString("base64")}`), ["250 2.0.0", "235 2.7.0"])
      const q = yield* s.open()
      yield* q.command("EHLO c")
      assert.strictEqual(show(yield* q.command("AUTH LOGIN")), "334")
      yield* q.write("B".repeat(30_000))
      assert.strictEqual(show(yield* q.reply), "500 5.5.2")
      assert.isTrue(yield* q.closed)
    }))

  test(net)("a session refused by newSession (554): that reply, 503 to anything but QUIT, closed after timeouts.refusedSession", () =>
    Effect.gen(function*() {
      const blocked = SmtpError.of(554, [5, 7, 1], "Your address is on a block list")
      const { layer, rec } = makeBackend({ newSession: () => Effect.fail(blocked) })
      const s = yield* start({ net, backend: layer, timeouts: { refusedSession: net === "memory" ? "3 seconds" : "1 second" } })
      const text = "EHLO c\r\nMAIL FROM:<a@b.example>\r\nDATA\r\nQUIT\r\n"
      for (const d of deliveries(text, { cutEvery: cutEvery(net) * 4 })) {
        assert.deepStrictEqual(checked(yield* said(net, s, d), d.name), ["554 5.7.1", "503 5.5.1", "503 5.5.1", "503 5.5.1", "221 2.0.0"], d.name)
      }
      // A client that says nothing is let go after the timeout (in memory, virtual time).
      const silent = yield* said(net, s, { name: "silent", chunks: [] })
      assert.deepStrictEqual(codes(silent), ["554 5.7.1", "421 4.4.2"])
      assert.notInclude(rec.events.join(), "mail:")
    }))
})

describe("the wire trace", () => {
  it.live("every command and reply at Debug level: AUTH data redacted, the message as a byte count", () =>
    Effect.gen(function*() {
      const backend = makeBackend({ auth: Sasl.serverMechanisms({ password: Sasl.passwordVerifier(() => Effect.succeed(Redacted.make("s3cret"))) }) })
      const s = yield* start({ backend: backend.layer, allowInsecureAuth: true, logTraffic: true })
      const p = yield* s.open()
      const plain = Buffer.from("\0user\0s3cret").toString("base64")
      yield* dialog(p, "EHLO c.example", "AUTH LOGIN", "*", `AUTH PLAIN ${plain}`)
      yield* dialog(p, "MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>", "DATA", "Subject: x\r\n\r\nhello\r\n.", "QUIT")
      yield* p.closed
      const trace = s.logs.filter((l) => l.annotations["smtp"] !== undefined).map((l) => `${l.annotations["smtp"]} ${String(l.message)}`)
      assert.deepStrictEqual(trace.slice(0, 3), ["S 220 localhost ESMTP service ready", "C EHLO c.example", trace[2]!])
      assert.match(trace[2]!, /^S 250-localhost Hello c\.example \| 250-PIPELINING \| .* \| 250 AUTH PLAIN LOGIN$/)
      assert.deepStrictEqual(trace.slice(3), [
        "C AUTH LOGIN",
        "S 334 VXNlcm5hbWU6",
        "C *",
        "S 501 5.0.0 Authentication cancelled",
        "C AUTH PLAIN <redacted>",
        "S 235 2.7.0 Authentication successful",
        "C MAIL FROM:<a@b.example>",
        "S 250 2.1.0 Sender OK",
        "C RCPT TO:<c@d.example>",
        "S 250 2.1.5 Recipient OK",
        "C DATA",
        "S 354 Start mail input; end with <CRLF>.<CRLF>",
        "C <message: 21 bytes>",
        "S 250 2.0.0 OK: message accepted",
        "C QUIT",
        "S 221 2.0.0 localhost Service closing transmission channel"
      ])
      for (const l of s.logs) assert.notInclude(JSON.stringify(l), plain)
      assert.isTrue(s.logs.every((l) => l.annotations["smtp"] === undefined || l.level === "DEBUG"))
    }))

  it.live("off by default: nothing traced", () =>
    Effect.gen(function*() {
      const { s } = yield* server("memory")
      const p = yield* s.open()
      yield* dialog(p, "EHLO c", "QUIT")
      assert.isTrue(s.logs.every((l) => l.annotations["smtp"] === undefined))
    }))
})
