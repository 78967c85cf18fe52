/**
 * swaks's XCLIENT against effect-smtp's server: a trusted swaks is offered XCLIENT with every
 * attribute it can send, gets 220, says EHLO again and sends mail that the backend receives as
 * from the client swaks named; an untrusted swaks is not offered XCLIENT at all.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { describeRun } from "./support/process.ts"
import * as Server from "./support/server.ts"
import { swaks, transcript } from "./support/swaks.ts"

const sent = (stdout: string) => transcript(stdout).filter((l) => l.kind === "sent").map((l) => l.text)
const received = (stdout: string) => transcript(stdout).filter((l) => l.kind === "received").map((l) => l.text)

describe("swaks --xclient → effect-smtp server", () => {
  it.live("every attribute: the session starts over as the client swaks names", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ xclient: { trusted: ["127.0.0.0/8"] } })
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--xclient-name",
        "spike.example",
        "--xclient-addr",
        "198.51.100.7",
        "--xclient-port",
        "4711",
        "--xclient-proto",
        "ESMTP",
        "--xclient-helo",
        "spike helo",
        "--xclient-login",
        "alice",
        "--xclient-destaddr",
        "203.0.113.25",
        "--xclient-destport",
        "25",
        "--data",
        "Subject: through XCLIENT\n\nbody"
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.include(received(r.stdout), "250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT")
      const xclient = sent(r.stdout).find((l) => l.startsWith("XCLIENT "))
      assert.isDefined(xclient, describeRun(r))
      // swaks xtext-encodes the space in the HELO value.
      assert.include(xclient!, "HELO=spike+20helo")
      const after = received(r.stdout)
      assert.isTrue(after.some((l) => /^220 localhost ESMTP/.test(l)) && after.filter((l) => l.startsWith("220 ")).length === 2)
      // Two sessions: the one swaks connected with, and the one XCLIENT began.
      assert.strictEqual(server.sessions(), 2)
      const info = server.connections[1]!
      assert.deepStrictEqual(info.remoteEndpoint, { _tag: "Tcp", host: "198.51.100.7", port: 4711 })
      assert.deepStrictEqual(info.localEndpoint, { _tag: "Tcp", host: "203.0.113.25", port: 25 })
      assert.deepStrictEqual(info.xclient?.(), {
        name: "spike.example",
        addr: "198.51.100.7",
        port: "4711",
        proto: "ESMTP",
        helo: "spike helo",
        login: "alice",
        destaddr: "203.0.113.25",
        destport: "25"
      })
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.strictEqual(m.authenticatedAs, "alice")
      // swaks said EHLO again after the 220: that name wins over the XCLIENT HELO.
      assert.strictEqual(m.helo, "client.test")
    }))

  it.live("[UNAVAILABLE], [TEMPUNAVAIL] and IPV6:, in several XCLIENT commands", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ xclient: { trusted: ["127.0.0.1"] } })
      const r = yield* swaks(server.port(), [
        "--to",
        "rcpt@example.net",
        "--xclient-name",
        "[TEMPUNAVAIL]",
        "--xclient-addr",
        "IPV6:2001:db8::7",
        "--xclient-delim",
        "--xclient-port",
        "[UNAVAILABLE]",
        "--xclient-login",
        "[UNAVAILABLE]"
      ])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(sent(r.stdout).filter((l) => l.startsWith("XCLIENT ")).length, 2)
      const info = server.connections.at(-1)!
      assert.deepStrictEqual(info.remoteEndpoint, { _tag: "Tcp", host: "2001:db8::7", port: 0 })
      assert.strictEqual(info.xclient?.()?.name, "[TEMPUNAVAIL]")
      assert.strictEqual(server.received[0]!.authenticatedAs, undefined)
    }))

  it.live("an untrusted swaks is not offered XCLIENT", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ xclient: { trusted: ["10.0.0.0/8"] } })
      const r = yield* swaks(server.port(), ["--to", "rcpt@example.net", "--xclient-addr", "198.51.100.7"])
      assert.strictEqual(r.code, 33, describeRun(r))
      assert.include(r.stdout + r.stderr, "Host did not advertise XCLIENT")
      assert.isFalse(received(r.stdout).some((l) => l.includes("XCLIENT")))
      assert.strictEqual(server.received.length, 0)
    }))
})
