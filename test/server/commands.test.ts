/**
 * The SMTP conversation over the wire: every command, its reply code and enhanced code,
 * sequence errors, and what the backend sees. Each suite runs over the in-memory network
 * and over real TCP.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { Backend } from "../../src/Backend.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, drained, envelope, type Net, show, start, waitFor } from "../support/server.ts"

const rejected = SmtpError.of(550, [5, 7, 1], "Sender rejected by policy")

describe.each<Net>(["memory", "tcp"])("commands over %s", (net) => {
  it.live("greets with 220 and the domain; HELO and EHLO answer 250 without enhanced codes", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, domain: "mx.example.org" })
      const p = yield* s.connect()
      const greeting = yield* p.reply
      assert.strictEqual(greeting.code, 220)
      assert.strictEqual(greeting.enhancedCode, undefined)
      assert.deepStrictEqual(greeting.lines, ["mx.example.org ESMTP service ready"])

      const helo = yield* p.command("HELO client.example")
      assert.strictEqual(show(helo), "250")
      assert.deepStrictEqual(helo.lines, ["mx.example.org Hello client.example"])

      const ehlo = yield* p.command("EHLO client.example")
      assert.strictEqual(show(ehlo), "250")
      assert.strictEqual(ehlo.lines[0], "mx.example.org Hello client.example")
      assert.isAbove(ehlo.lines.length, 1)
    }))

  it.live("a whole transaction: MAIL, RCPT, DATA, dot-unstuffing, QUIT, and the session finalizer", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      assert.deepStrictEqual(
        yield* dialog(p, "EHLO client.example", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "RCPT TO:<c@example.com>", "DATA"),
        ["250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354"]
      )
      const done = yield* p.command("Subject: hi\r\n\r\n..leading dot\r\nlast line\r\n.")
      assert.strictEqual(show(done), "250 2.0.0")
      assert.strictEqual(rec.messages.length, 1)
      assert.deepStrictEqual(rec.messages[0], {
        from: "a@example.com",
        rcpts: ["b@example.com", "c@example.com"],
        body: "Subject: hi\r\n\r\n.leading dot\r\nlast line\r\n",
        connection: rec.sessions[0]!.id
      })
      const quit = yield* p.command("QUIT")
      assert.strictEqual(show(quit), "221 2.0.0")
      assert.isTrue(yield* p.closed)
      // The finalizer runs before the socket is closed.
      assert.deepStrictEqual(rec.events, [
        "session",
        "mail:a@example.com",
        "rcpt:b@example.com",
        "rcpt:c@example.com",
        "data",
        "reset",
        "logout"
      ])
      yield* drained(s)
    }))

  it.live("the null sender, an empty body, and several messages on one connection", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<>", "RCPT TO:<b@example.com>", "DATA", "."), [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0"
      ])
      assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<x@example.com>", "RCPT TO:<y@example.com>", "DATA", "two\r\n."), [
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0"
      ])
      assert.deepStrictEqual(rec.messages.map((m) => [m.from, m.body]), [[null, ""], ["x@example.com", "two\r\n"]])
    }))

  it.live("a second EHLO or HELO resets the transaction", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "EHLO again.example", "RCPT TO:<z@example.com>", "DATA"), [
        "250",
        "503 5.5.1",
        "503 5.5.1"
      ])
      assert.include(rec.events, "reset")
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "HELO plain.example", "DATA"), ["250", "503 5.5.1"])
      // The new name is what the backend sees.
      assert.strictEqual(rec.sessions[0]!.helo(), "plain.example")
    }))

  it.live("RSET, NOOP, VRFY, HELP, EXPN, in any state", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "RSET", "NOOP", "NOOP hello there", "VRFY postmaster", "HELP", "HELP MAIL", "EXPN list"), [
        "250 2.0.0",
        "250 2.0.0",
        "250 2.0.0",
        "252 2.5.0",
        "214 2.0.0",
        "214 2.0.0",
        "502 5.5.1"
      ])
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "RSET", "RCPT TO:<b@example.com>"), ["250 2.0.0", "503 5.5.1"])
      assert.include(rec.events, "reset")
      // RSET and NOOP never reach the backend as anything but a reset.
      assert.isFalse(rec.events.some((e) => e.startsWith("data")))
    }))

  it.live("VRFY answers the configured reply", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, vrfyReply: { code: 550, text: "No VRFY here" } })
      const p = yield* s.open()
      const r = yield* p.command("VRFY someone")
      assert.strictEqual(r.code, 550)
      assert.deepStrictEqual(r.lines, ["No VRFY here"])
    }))

  it.live("sequence errors are 503 5.5.1; unknown commands 500 5.5.2; bad arguments 501", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, softErrorLimit: 100 })
      const p = yield* s.open()
      assert.deepStrictEqual(
        yield* dialog(
          p,
          "MAIL FROM:<a@example.com>", // before HELO
          "EHLO c",
          "RCPT TO:<b@example.com>", // before MAIL
          "DATA", // before MAIL
          "BDAT 0 LAST", // before MAIL
          "MAIL FROM:<a@example.com>",
          "DATA", // before RCPT
          "MAIL FROM:<again@example.com>", // second MAIL in a transaction
          "XYZZY",
          "",
          "MAIL FROM:<broken@",
          "MAIL TO:<a@example.com>",
          "DATA now",
          "QUIT now"
        ),
        [
          "503 5.5.1",
          "250",
          "503 5.5.1",
          "503 5.5.1",
          "503 5.5.1",
          "250 2.1.0",
          "503 5.5.1",
          "503 5.5.1",
          "500 5.5.2",
          "500 5.5.2",
          "501 5.1.7",
          "501 5.5.4",
          "501 5.5.4",
          "501 5.5.4"
        ]
      )
      // The refused second MAIL did not replace the first.
      assert.deepStrictEqual(rec.events.filter((e) => e.startsWith("mail")), ["mail:a@example.com"])
    }))

  it.live("a backend's SmtpError is the reply; any other failure is 451 4.3.0 and is logged", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({
        mail: (from) => from === "blocked@example.com" ? Effect.fail(rejected) : Effect.void,
        rcpt: (to) => to === "crash@example.com" ? Effect.fail(new Error("database unreachable")) : Effect.void,
        data: (body) =>
          Stream.runDrain(body).pipe(
            Effect.andThen(Effect.fail(SmtpError.of(554, [5, 6, 0], "Content rejected\nSecond line")))
          )
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      const refused = yield* dialog(p, "EHLO c", "MAIL FROM:<blocked@example.com>")
      assert.deepStrictEqual(refused, ["250", "550 5.7.1"])
      assert.strictEqual(show(yield* p.command("MAIL FROM:<ok@example.com>")), "250 2.1.0")
      const generic = yield* p.command("RCPT TO:<crash@example.com>")
      assert.strictEqual(show(generic), "451 4.3.0")
      assert.notInclude(generic.text, "database")
      assert.deepStrictEqual(yield* dialog(p, "RCPT TO:<fine@example.com>", "DATA"), ["250 2.1.5", "354"])
      const content = yield* p.command("body\r\n.")
      assert.strictEqual(show(content), "554 5.6.0")
      assert.deepStrictEqual(content.lines, ["Content rejected", "Second line"])
      // The connection goes on.
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
      const logged = s.logs.filter((l) => l.level === "ERROR")
      assert.strictEqual(logged.length, 1)
      assert.include(JSON.stringify(logged[0]), "database unreachable")
    }))

  it.live("a failure of data that is not an SmtpError is 451 4.3.0 after the body", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({ data: () => Effect.fail("disk full") })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "DATA", "a\r\nb\r\n.", "NOOP"), ["354", "451 4.3.0", "250 2.0.0"])
    }))

  it.live("a defect closes that connection with 421 4.3.0, runs the finalizer, and the next connection is served", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        mail: (from) => from === "boom@example.com" ? Effect.die(new Error("bug in backend")) : Effect.void
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<boom@example.com>"), ["250", "421 4.3.0"])
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.logouts(), 1)
      assert.isTrue(s.logs.some((l) => l.level === "ERROR" && (l.cause ?? "").includes("bug in backend")))

      const next = yield* s.open()
      yield* envelope(next)
      assert.deepStrictEqual(yield* dialog(next, "DATA", "ok\r\n.", "QUIT"), ["354", "250 2.0.0", "221 2.0.0"])
      assert.strictEqual(rec.messages.length, 1)
    }))

  it.live("a defect while the body streams closes with 421 4.3.0", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        data: (body) => Stream.runDrain(Stream.take(body, 1)).pipe(Effect.andThen(Effect.die("stream handler bug")))
      })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "DATA", "x\r\n."), ["354", "421 4.3.0"])
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.logouts(), 1)
    }))

  it.live("a defect in reset (RSET) closes with 421 4.3.0; a defect in the finalizer does not stop the server", () =>
    Effect.gen(function*() {
      let resets = 0
      const { layer, rec } = makeBackend({ logout: Effect.die("logout bug") })
      const dying = Layer.succeed(
        Backend,
        Backend.of({
          newSession: () =>
            Effect.succeed({
              mail: () => Effect.void,
              rcpt: () => Effect.void,
              data: Stream.runDrain,
              reset: Effect.suspend(() => (++resets === 1 ? Effect.die("reset bug") : Effect.void))
            })
        })
      )
      const a = yield* start({ net, backend: dying })
      const p = yield* a.open()
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>", "RSET"), ["250", "250 2.1.0", "421 4.3.0"])
      assert.isTrue(yield* p.closed)
      const again = yield* a.open()
      assert.strictEqual(show(yield* again.command("NOOP")), "250 2.0.0")

      const b = yield* start({ net, backend: layer })
      const q = yield* b.open()
      assert.strictEqual(show(yield* q.command("QUIT")), "221 2.0.0")
      assert.isTrue(yield* q.closed)
      assert.strictEqual(rec.logouts(), 1)
      const next = yield* b.open()
      assert.strictEqual(show(yield* next.command("NOOP")), "250 2.0.0")
    }))

  it.live("newSession: an SmtpError is the reply, then only QUIT (503 to the rest); another failure or a defect is 421 and closes", () =>
    Effect.gen(function*() {
      let mode: "smtp" | "error" | "defect" = "smtp"
      const { layer, rec } = makeBackend({
        newSession: () =>
          mode === "smtp"
            ? Effect.fail(SmtpError.of(554, [5, 7, 1], "Your address is on a block list"))
            : mode === "error"
            ? Effect.fail(new Error("no sessions today"))
            : Effect.die(new Error("newSession bug"))
      })
      const s = yield* start({ net, backend: layer })
      for (const [m, expected] of [["smtp", "554 5.7.1"], ["error", "421 4.3.0"], ["defect", "421 4.3.0"]] as const) {
        mode = m
        const p = yield* s.connect()
        assert.strictEqual(show(yield* p.reply), expected, m)
        // RFC 5321 3.1: after a 554 greeting the server waits for QUIT.
        if (m === "smtp") assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>", "QUIT"), ["503 5.5.1", "503 5.5.1", "221 2.0.0"])
        assert.isTrue(yield* p.closed, m)
      }
      // The finalizers registered before the failure ran.
      assert.strictEqual(rec.logouts(), 3)
      assert.deepStrictEqual(rec.events, ["session", "logout", "session", "logout", "session", "logout"])
      yield* drained(s)
    }))

  it.live("the session finalizer runs when the client vanishes mid-transaction", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      yield* Effect.scoped(Effect.gen(function*() {
        const p = yield* s.open()
        yield* envelope(p)
        assert.strictEqual(show(yield* p.command("DATA")), "354")
        yield* p.write("half a body\r\n")
      }))
      yield* waitFor(() => rec.logouts() === 1)
      assert.strictEqual(rec.messages.length, 0)
      assert.strictEqual(rec.failedBodies.length, 1)
      assert.strictEqual(rec.failedBodies[0]!.partial, "half a body\r\n")
      yield* drained(s)
    }))

  it.live("the backend sees the connection: endpoints, HELO name, protocol", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p, ["b@example.com"], "EHLO client.example")
      const info = rec.sessions[0]!
      assert.strictEqual(info.protocol, "smtp")
      assert.strictEqual(info.helo(), "client.example")
      assert.strictEqual(info.tls(), undefined)
      assert.strictEqual(info.authenticatedAs(), undefined)
      assert.strictEqual(info.remoteEndpoint?._tag, "Tcp")
      assert.deepStrictEqual(info.localEndpoint, s.endpoint)
      if (info.remoteEndpoint?._tag === "Tcp" && p.transport.localEndpoint?._tag === "Tcp") {
        assert.strictEqual(info.remoteEndpoint.port, p.transport.localEndpoint.port)
      }
    }))

  it.live("HELO and EHLO are refused by an LMTP server; LHLO by an SMTP server", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const smtp = yield* start({ net, backend: layer })
      const p = yield* smtp.open()
      assert.deepStrictEqual(yield* dialog(p, "LHLO c", "MAIL FROM:<a@example.com>"), ["500 5.5.1", "503 5.5.1"])
      const lmtp = yield* start({ net, backend: layer, protocol: "lmtp" })
      const q = yield* lmtp.open()
      assert.deepStrictEqual(yield* dialog(q, "HELO c", "EHLO c", "MAIL FROM:<a@example.com>", "LHLO c"), [
        "500 5.5.1",
        "500 5.5.1",
        "503 5.5.1",
        "250"
      ])
    }))
})

describe("the Backend layer", () => {
  it.live("is built once and shared by every connection", () =>
    Effect.gen(function*() {
      let built = 0
      const sessions: Array<string> = []
      const backend = Layer.effect(
        Backend,
        Effect.sync(() => {
          built++
          return Backend.of({
            newSession: (info) =>
              Effect.sync(() => {
                sessions.push(info.id)
                return { mail: () => Effect.void, rcpt: () => Effect.void, data: Stream.runDrain, reset: Effect.void }
              })
          })
        })
      )
      const s = yield* start({ backend })
      for (let i = 0; i < 3; i++) {
        const p = yield* s.open()
        assert.strictEqual(show(yield* p.command("QUIT")), "221 2.0.0")
      }
      assert.strictEqual(built, 1)
      assert.strictEqual(new Set(sessions).size, 3)
    }))
})
