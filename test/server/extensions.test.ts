/**
 * What EHLO advertises: each extension only when it is switched on and usable on this
 * connection, and the MAIL/RCPT parameters each one brings are accepted only then.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { SmtpError } from "../../src/SmtpError.ts"
import { makeBackend } from "../support/backend.ts"
import { testCerts } from "../support/certs.ts"
import { dialog, type Net, replies, show, start } from "../support/server.ts"

const certs = testCerts()
const tls = { key: certs.server.key, cert: certs.server.cert }
const everything = {
  pipelining: true,
  eightBitMime: true,
  enhancedStatusCodes: true,
  chunking: true,
  binaryMime: true,
  smtputf8: true,
  requireTls: true,
  dsn: true,
  rrvs: true,
  deliverBy: true,
  mtPriority: true,
  limits: true
}
const nothing = {
  pipelining: false,
  eightBitMime: false,
  enhancedStatusCodes: false,
  chunking: false,
  binaryMime: false,
  smtputf8: false,
  requireTls: false,
  dsn: false,
  rrvs: false,
  deliverBy: false,
  mtPriority: false,
  limits: false
}

describe.each<Net>(["memory", "tcp"])("EHLO over %s", (net) => {
  it.live("by default: PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, CHUNKING, LIMITS, nothing else", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      assert.deepStrictEqual((yield* p.command("EHLO c")).lines, [
        "localhost Hello c",
        "PIPELINING",
        "SIZE 33554432",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "LIMITS RCPTMAX=1000"
      ])
    }))

  it.live("everything on: REQUIRETLS only once TLS is up, STARTTLS only before", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, tls, extensions: everything, maxRecipients: 50 })
      const p = yield* s.open()
      const before = (yield* p.command("EHLO c")).lines
      assert.deepStrictEqual(before, [
        "localhost Hello c",
        "PIPELINING",
        "SIZE 33554432",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
        "SMTPUTF8",
        "DSN",
        "RRVS",
        "DELIVERBY",
        "MT-PRIORITY",
        "LIMITS RCPTMAX=50",
        "STARTTLS"
      ])
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      yield* p.startTls({ ca: certs.ca })
      const after = (yield* p.command("EHLO c")).lines
      assert.include(after, "REQUIRETLS")
      assert.notInclude(after, "STARTTLS")
      assert.strictEqual(after.length, before.length)
    }))

  it.live("everything off and no size limit: the greeting line alone", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, extensions: nothing, maxMessageBytes: 0 })
      const p = yield* s.open()
      assert.deepStrictEqual((yield* p.command("EHLO c")).lines, ["localhost Hello c"])
    }))

  it.live("BINARYMIME needs CHUNKING", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, extensions: { binaryMime: true, chunking: false } })
      const p = yield* s.open()
      const lines = (yield* p.command("EHLO c")).lines
      assert.notInclude(lines, "BINARYMIME")
      assert.notInclude(lines, "CHUNKING")
      assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<a@example.com> BODY=BINARYMIME"), ["555 5.5.4"])
    }))

  it.live("parameters are refused with 555 5.5.4 while their extension is off, accepted when on", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const off = yield* start({ net, backend: layer, extensions: { ...nothing, enhancedStatusCodes: true } })
      const p = yield* off.open()
      assert.deepStrictEqual(
        yield* dialog(
          p,
          "EHLO c",
          "MAIL FROM:<a@example.com> BODY=8BITMIME",
          "MAIL FROM:<a@example.com> RET=FULL ENVID=x1",
          "MAIL FROM:<a@example.com> BY=120;R",
          "MAIL FROM:<a@example.com> MT-PRIORITY=3",
          "MAIL FROM:<a@example.com> SMTPUTF8",
          "MAIL FROM:<a@example.com> REQUIRETLS",
          "MAIL FROM:<a@example.com>",
          "RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE",
          "RCPT TO:<b@example.com> RRVS=2020-01-01T00:00:00Z",
          "RCPT TO:<b@example.com>"
        ),
        ["250", "555 5.5.4", "555 5.5.4", "555 5.5.4", "555 5.5.4", "555 5.5.4", "555 5.5.4", "250 2.1.0", "555 5.5.4", "555 5.5.4", "250 2.1.5"]
      )

      const on = yield* start({ net, backend: layer, extensions: everything })
      const q = yield* on.open()
      assert.deepStrictEqual(
        yield* dialog(
          q,
          "EHLO c",
          "MAIL FROM:<a@example.com> BODY=8BITMIME RET=FULL ENVID=x1 BY=120;R MT-PRIORITY=3 SIZE=1000",
          "RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.com RRVS=2020-01-01T00:00:00Z"
        ),
        ["250", "250 2.1.0", "250 2.1.5"]
      )
      const mail = rec.mailOptions.at(-1)!
      assert.strictEqual(mail.body, "8BITMIME")
      assert.strictEqual(mail.ret, "FULL")
      assert.strictEqual(mail.envelopeId, "x1")
      assert.deepStrictEqual(mail.deliverBy, { seconds: 120, mode: "R", trace: false })
      assert.strictEqual(mail.mtPriority, 3)
      assert.strictEqual(mail.size, 1000)
      const rcpt = rec.rcptOptions.at(-1)!
      assert.deepStrictEqual(rcpt.notify, ["SUCCESS", "FAILURE"])
      assert.deepStrictEqual(rcpt.originalRecipient, { addressType: "RFC822", address: "b@example.com" })
    }))

  it.live("SMTPUTF8: non-ASCII addresses only when on and asked for", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const off = yield* start({ net, backend: layer })
      const p = yield* off.open()
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή>"), ["250", "553 5.6.7"])
      const on = yield* start({ net, backend: layer, extensions: { smtputf8: true } })
      const q = yield* on.open()
      assert.deepStrictEqual(
        yield* dialog(q, "EHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<ユーザー@例え.jp>", "RSET", "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8", "RCPT TO:<ユーザー@例え.jp>", "DATA", "Subject: héllo\r\n."),
        ["250", "250 2.1.0", "553 5.6.7", "250 2.0.0", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
      )
      assert.deepStrictEqual(rec.messages[0]!.rcpts, ["ユーザー@例え.jp"])
      assert.strictEqual(Buffer.from(rec.messages[0]!.body, "latin1").toString("utf8"), "Subject: héllo\r\n")
    }))

  it.live("REQUIRETLS on MAIL needs a TLS connection: 530 5.7.10 before, 250 after STARTTLS", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, tls, extensions: { requireTls: true } })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com> REQUIRETLS", "STARTTLS"), ["250", "530 5.7.10", "220 2.0.0"])
      yield* p.startTls({ ca: certs.ca })
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com> REQUIRETLS"), ["250", "250 2.1.0"])
    }))

  it.live("CHUNKING off: BDAT is 521 5.5.1 and the connection closes; its bytes are never run as commands", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, extensions: { chunking: false } })
      const p = yield* s.open()
      yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>")
      const chunk = "RSET\r\nMAIL FROM:<evil@example.com>\r\n"
      yield* p.write(`BDAT ${chunk.length} LAST\r\n${chunk}NOOP\r\n`)
      assert.deepStrictEqual(yield* replies(p, 1), ["521 5.5.1"])
      assert.isTrue(yield* p.closed)
      assert.notInclude(rec.events, "mail:evil@example.com")
    }))
})

describe("ENHANCEDSTATUSCODES off", () => {
  it.live("no reply carries an enhanced code, not even the backend's or the parser's", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({
        rcpt: (to) => to === "no@example.com" ? Effect.fail(SmtpError.of(550, [5, 1, 1], "No such user")) : Effect.void,
        data: () => Effect.fail(new Error("storage down"))
      })
      const s = yield* start({ backend: layer, extensions: { enhancedStatusCodes: false }, softErrorLimit: 100 })
      const p = yield* s.open()
      const lines = (yield* p.command("EHLO c")).lines
      assert.notInclude(lines, "ENHANCEDSTATUSCODES")
      const all = [
        "HELO c",
        "NOOP",
        "VRFY x",
        "HELP",
        "EXPN x",
        "XYZZY",
        "MAIL FROM:<bad",
        "RCPT TO:<a@example.com>",
        "MAIL FROM:<a@example.com> SIZE=99999999999",
        "MAIL FROM:<a@example.com> FOO=BAR",
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<no@example.com>",
        "RCPT TO:<yes@example.com>",
        "AUTH PLAIN",
        "STARTTLS",
        "DATA",
        "body\r\n.",
        "RSET",
        "QUIT"
      ]
      for (const line of all) {
        const r = yield* p.command(line)
        assert.strictEqual(r.enhancedCode, undefined, line)
        assert.notMatch(r.lines[0]!, /^\d\.\d{1,3}\.\d{1,3}/, line)
      }
    }))
})
