/**
 * XCLIENT (Postfix's extension), over the in-memory network: offered only to trusted clients;
 * its attributes become the connection's facts for a new backend session that starts with 220;
 * refused from others (550), inside a transaction (503) and with bad attributes (501).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { SmtpError } from "../../src/SmtpError.ts"
import type { Endpoint } from "../../src/Transport.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, show, start } from "../support/server.ts"

const tcp = (host: string, port: number): Endpoint => ({ _tag: "Tcp", host, port })
const blocked = SmtpError.of(554, [5, 7, 1], "Client host rejected")
const busy = SmtpError.of(421, [4, 7, 0], "Too busy for you")

const server = (xclient: boolean) => {
  const backend = makeBackend({
    newSession: (info) => {
      const host = info.remoteEndpoint?._tag === "Tcp" ? info.remoteEndpoint.host : undefined
      return host === "198.51.100.66" ? Effect.fail(blocked) : host === "198.51.100.42" ? Effect.fail(busy) : Effect.void
    }
  })
  return Effect.map(
    start({
      backend: backend.layer,
      softErrorLimit: 100, // the refusals below are the point, not the error limits
      ...(xclient ? { xclient: { trusted: ["127.0.0.1", "10.0.0.0/8"] } } : {})
    }),
    (s) => ({ s, rec: backend.rec })
  )
}

const ehloLines = (text: ReadonlyArray<string>) => text.join("\n")

describe("XCLIENT", () => {
  it.effect("a trusted client: the session starts over with the client it names", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(true)
      const p = yield* s.open()
      const ehlo = yield* p.command("EHLO proxy.example")
      assert.include(ehloLines(ehlo.lines), "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT")
      const x = yield* p.command("XCLIENT NAME=spike.example ADDR=198.51.100.7 PORT=4711 LOGIN=alice DESTADDR=203.0.113.25 DESTPORT=25")
      assert.strictEqual(x.code, 220)
      assert.include(x.lines[0], "localhost ESMTP")
      // The first session ended; a new one began with the new facts.
      assert.deepStrictEqual(rec.events.slice(0, 3), ["session", "logout", "session"])
      const info = rec.sessions[1]!
      assert.deepStrictEqual(info.remoteEndpoint, tcp("198.51.100.7", 4711))
      assert.deepStrictEqual(info.localEndpoint, tcp("203.0.113.25", 25))
      assert.strictEqual(info.authenticatedAs(), "alice")
      assert.strictEqual(info.helo(), undefined) // back at the greeting stage
      assert.deepStrictEqual(info.xclient?.(), {
        name: "spike.example",
        addr: "198.51.100.7",
        port: "4711",
        login: "alice",
        destaddr: "203.0.113.25",
        destport: "25"
      })
      assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<a@example.com>"), ["503 5.5.1"])
      assert.deepStrictEqual(
        yield* dialog(p, "EHLO spike.example", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA"),
        ["250", "250 2.1.0", "250 2.1.5", "354"]
      )
      assert.strictEqual(show(yield* p.command("Hi\r\n.")), "250 2.0.0")
      assert.strictEqual(info.helo(), "spike.example")
      assert.strictEqual(rec.messages.length, 1)
      // AUTH after LOGIN=: already authenticated.
      assert.strictEqual((yield* p.command("AUTH PLAIN AGFsaWNlAHg=")).code, 503)
    }))

  it.effect("attributes add up over several commands; HELO and PROTO are kept as the greeting stage", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(true)
      const p = yield* s.open()
      yield* p.command("EHLO proxy.example")
      assert.strictEqual((yield* p.command("XCLIENT NAME=spike.example ADDR=IPV6:2001:DB8::7")).code, 220)
      assert.strictEqual((yield* p.command("xclient helo=spike+20host proto=esmtp")).code, 220)
      const info = rec.sessions[2]!
      assert.deepStrictEqual(info.remoteEndpoint, tcp("2001:db8::7", 0))
      assert.strictEqual(info.helo(), "spike host")
      assert.deepStrictEqual(info.xclient?.(), { name: "spike.example", addr: "2001:db8::7", helo: "spike host", proto: "ESMTP" })
      // HELO given: MAIL needs no new EHLO.
      assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<a@example.com>"), ["250 2.1.0"])
    }))

  it.effect("[UNAVAILABLE] and [TEMPUNAVAIL], in any case", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(true)
      const p = yield* s.open()
      yield* p.command("EHLO proxy.example")
      const x = yield* p.command("XCLIENT NAME=[tempunavail] ADDR=[Unavailable] PORT=[UNAVAILABLE] LOGIN=[UNAVAILABLE]")
      assert.strictEqual(x.code, 220)
      const info = rec.sessions[1]!
      assert.strictEqual(info.remoteEndpoint, undefined)
      assert.strictEqual(info.authenticatedAs(), undefined)
      assert.deepStrictEqual(info.xclient?.(), { name: "[TEMPUNAVAIL]", addr: "[UNAVAILABLE]", port: "[UNAVAILABLE]", login: "[UNAVAILABLE]" })
    }))

  it.effect("bad attributes: 501 5.5.4, the session unchanged", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(true)
      const p = yield* s.open()
      yield* p.command("EHLO proxy.example")
      for (
        const bad of [
          "XCLIENT",
          "XCLIENT FOO=bar",
          "XCLIENT NAME",
          "XCLIENT =x",
          "XCLIENT ADDR=999.0.0.1",
          "XCLIENT ADDR=2001:db8::1%eth0",
          "XCLIENT PORT=65536",
          "XCLIENT PROTO=LMTP",
          "XCLIENT NAME=bad..host",
          "XCLIENT NAME=-bad.example",
          "XCLIENT HELO=a+0D+0Ab", // CR LF through xtext
          "XCLIENT LOGIN=a+zz",
          "XCLIENT NAME=ok.example ADDR=nope"
        ]
      ) {
        assert.strictEqual(show(yield* p.command(bad)), "501 5.5.4", bad)
      }
      assert.strictEqual(rec.sessions.length, 1)
      // Not counted as unknown commands (5 in a row would close the connection).
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
    }))

  it.effect("inside a transaction: 503", () =>
    Effect.gen(function*() {
      const { s } = yield* server(true)
      const p = yield* s.open()
      assert.deepStrictEqual(
        yield* dialog(p, "EHLO proxy.example", "MAIL FROM:<a@example.com>", "XCLIENT ADDR=198.51.100.7", "RSET", "XCLIENT ADDR=198.51.100.7"),
        ["250", "250 2.1.0", "503 5.5.1", "250 2.0.0", "220"]
      )
    }))

  it.effect("an untrusted client is not offered XCLIENT and is refused with 550 5.7.0", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(true)
      const p = yield* s.open({ localAddress: "192.0.2.9" })
      const ehlo = yield* p.command("EHLO client.example")
      assert.notInclude(ehloLines(ehlo.lines), "XCLIENT")
      assert.strictEqual(show(yield* p.command("XCLIENT ADDR=198.51.100.7")), "550 5.7.0")
      assert.strictEqual(rec.sessions.length, 1)
      // A trusted network, not only an address.
      const q = yield* s.open({ localAddress: "10.9.8.7" })
      assert.include(ehloLines((yield* q.command("EHLO proxy.example")).lines), "XCLIENT")
    }))

  it.effect("without the option XCLIENT is an unknown command", () =>
    Effect.gen(function*() {
      const { s } = yield* server(false)
      const p = yield* s.open()
      assert.notInclude(ehloLines((yield* p.command("EHLO client.example")).lines), "XCLIENT")
      assert.strictEqual(show(yield* p.command("XCLIENT ADDR=198.51.100.7")), "500 5.5.2")
    }))

  it.effect("the backend refusing the new client: its reply, then only QUIT, as at connect; a 421 closes", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(true)
      const p = yield* s.open()
      yield* p.command("EHLO proxy.example")
      assert.strictEqual(show(yield* p.command("XCLIENT ADDR=198.51.100.66")), "554 5.7.1")
      assert.deepStrictEqual(yield* dialog(p, "EHLO proxy.example", "XCLIENT ADDR=192.0.2.1", "QUIT"), ["503 5.5.1", "503 5.5.1", "221 2.0.0"])
      assert.isTrue(yield* p.closed)
      // The refused session's scope closed with the connection.
      assert.deepStrictEqual(rec.events, ["session", "logout", "session", "logout"])

      const q = yield* s.open()
      yield* q.command("EHLO proxy.example")
      assert.strictEqual(show(yield* q.command("XCLIENT ADDR=198.51.100.42")), "421 4.7.0")
      assert.isTrue(yield* q.closed)
    }))

  it.effect("bad trusted networks are a Listen error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(start({ backend: makeBackend().layer, xclient: { trusted: ["10.0.0.0/40"] } }))
      assert.strictEqual(error.reason, "Listen")
      assert.include(error.message, "xclient.trusted")
    }))
})
