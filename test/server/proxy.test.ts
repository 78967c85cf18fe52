/**
 * The server behind a PROXY protocol listener, over the in-memory network and in virtual time:
 * the header's client is the connection's remote endpoint for the backend and the per-IP limit;
 * untrusted peers, bad headers and late ones are closed before any greeting; LOCAL keeps the
 * proxy's address; the bytes after the header are the first the server reads.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { TestClock } from "effect/testing"
import * as ProxyProtocol from "../../src/ProxyProtocol.ts"
import type { Endpoint } from "../../src/Transport.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, replies, show, start } from "../support/server.ts"

const tcp = (host: string, port: number): Endpoint => ({ _tag: "Tcp", host, port })
const header = (version: 1 | 2, host: string, port = 40000) =>
  ProxyProtocol.format({ version, source: tcp(host, port), destination: tcp("203.0.113.25", 25) })

/** Lets the server run until it waits again (on the peer or on the clock). */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

const proxied = (options: { readonly trusted?: ReadonlyArray<string>; readonly timeout?: Duration.Input } = {}) => {
  const backend = makeBackend()
  return Effect.map(
    start({
      backend: backend.layer,
      listen: [{
        endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 0 },
        proxyProtocol: { trusted: options.trusted ?? ["127.0.0.0/8"], timeout: options.timeout }
      }],
      maxConnectionsPerIp: 1
    }),
    (server) => ({ server, rec: backend.rec })
  )
}

describe("PROXY protocol listener", () => {
  for (const version of [1, 2] as const) {
    it.effect(`v${version}: the backend sees the client the proxy speaks for, and the proxy`, () =>
      Effect.gen(function*() {
        const { rec, server } = yield* proxied()
        const p = yield* server.connect()
        yield* p.write(header(version, "198.51.100.7", 4711))
        assert.strictEqual(show(yield* p.reply), "220")
        assert.deepStrictEqual(yield* dialog(p, "EHLO client.example", "NOOP"), ["250", "250 2.0.0"])
        const info = rec.sessions[0]!
        assert.deepStrictEqual(info.remoteEndpoint, tcp("198.51.100.7", 4711))
        assert.deepStrictEqual(info.localEndpoint, tcp("203.0.113.25", 25))
        assert.strictEqual(info.proxy?.header.version, version)
        assert.strictEqual(info.proxy?.proxy?._tag, "Tcp")
        assert.strictEqual(info.proxy?.proxy?._tag === "Tcp" && info.proxy.proxy.host, "127.0.0.1")
        // Logs and spans name the client too.
        assert.isTrue(server.logs.some((l) => l.annotations.remote === "198.51.100.7:4711"))
      }))
  }

  it.effect("the per-IP limit counts the header's address, not the proxy's", () =>
    Effect.gen(function*() {
      const { server } = yield* proxied()
      const first = yield* server.connect()
      yield* first.write(header(2, "198.51.100.7"))
      assert.strictEqual(show(yield* first.reply), "220")
      // Same client through the same proxy: over maxConnectionsPerIp (1).
      const second = yield* server.connect()
      yield* second.write(header(2, "198.51.100.7", 40001))
      assert.strictEqual(show(yield* second.reply), "421 4.7.0")
      assert.isTrue(yield* second.closed)
      // Another client through the same proxy: its own count.
      const other = yield* server.connect()
      yield* other.write(ProxyProtocol.format({ version: 1, source: tcp("2001:db8::9", 1), destination: tcp("2001:db8::25", 25) }))
      assert.strictEqual(show(yield* other.reply), "220")
    }))

  it.effect("bytes after the header in the same write are the first the server reads", () =>
    Effect.gen(function*() {
      const { rec, server } = yield* proxied()
      const p = yield* server.connect()
      yield* p.write(Buffer.concat([header(2, "198.51.100.7"), Buffer.from("EHLO early.example\r\n")]))
      assert.deepStrictEqual(yield* replies(p, 2), ["220", "250"])
      assert.deepStrictEqual(yield* dialog(p, "NOOP"), ["250 2.0.0"])
      assert.strictEqual(rec.sessions.length, 1)
    }))

  it.effect("a header split over many writes is read whole", () =>
    Effect.gen(function*() {
      const { rec, server } = yield* proxied()
      const p = yield* server.connect()
      const h = ProxyProtocol.format({ version: 2, source: tcp("2001:db8::7", 7), destination: tcp("2001:db8::25", 25), crc32c: true })
      for (const b of h) yield* p.write(Uint8Array.of(b))
      assert.strictEqual(show(yield* p.reply), "220")
      assert.deepStrictEqual(rec.sessions[0]!.remoteEndpoint, tcp("2001:db8::7", 7))
    }))

  it.effect("LOCAL (a health check) and UNKNOWN keep the proxy's own address", () =>
    Effect.gen(function*() {
      const { rec, server } = yield* proxied()
      const local = yield* server.connect()
      yield* local.write(ProxyProtocol.format({ version: 2, command: "local" }))
      assert.strictEqual(show(yield* local.reply), "220")
      const unknown = yield* server.connect({ localAddress: "127.0.0.2" })
      yield* unknown.write("PROXY UNKNOWN\r\n")
      assert.strictEqual(show(yield* unknown.reply), "220")
      assert.strictEqual(rec.sessions[0]!.remoteEndpoint?._tag === "Tcp" && rec.sessions[0]!.remoteEndpoint.host, "127.0.0.1")
      assert.strictEqual(rec.sessions[0]!.proxy?.header.command, "local")
      assert.strictEqual(rec.sessions[1]!.remoteEndpoint?._tag === "Tcp" && rec.sessions[1]!.remoteEndpoint.host, "127.0.0.2")
    }))

  it.effect("a peer outside the trusted networks is closed at once, whatever it sends", () =>
    Effect.gen(function*() {
      const { rec, server } = yield* proxied({ trusted: ["10.0.0.0/8", "2001:db8::/32"] })
      const p = yield* server.connect({ localAddress: "192.0.2.9" })
      yield* p.write(header(1, "198.51.100.7")).pipe(Effect.ignore)
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.sessions.length, 0)
      assert.isTrue(server.logs.some((l) => String(l.message).includes("192.0.2.9") && String(l.message).includes("not a trusted proxy")))
      // 10.1.2.3 is trusted.
      const trusted = yield* server.connect({ localAddress: "10.1.2.3" })
      yield* trusted.write(header(1, "198.51.100.7"))
      assert.strictEqual(show(yield* trusted.reply), "220")
    }))

  it.effect("a malformed or truncated header closes the connection without a greeting", () =>
    Effect.gen(function*() {
      const { rec, server } = yield* proxied()
      for (const bad of ["EHLO client.example\r\n", "PROXY TCP4 198.51.100.7 203.0.113.25 1 99999\r\n"]) {
        const p = yield* server.connect()
        yield* p.write(bad)
        assert.isTrue(yield* p.closed, bad)
      }
      const truncated = yield* server.connect()
      yield* truncated.write(header(2, "198.51.100.7").subarray(0, 20))
      yield* truncated.transport.close
      yield* settle
      assert.strictEqual(rec.sessions.length, 0)
      assert.isTrue(server.logs.some((l) => String(l.message).includes("invalid PROXY header")))
      assert.isTrue(server.logs.some((l) => String(l.message).includes("closed within its PROXY header")))
    }))

  it.effect("no header within the timeout (5 s by default): closed", () =>
    Effect.gen(function*() {
      const { rec, server } = yield* proxied()
      const silent = yield* server.connect()
      const partial = yield* server.connect()
      yield* partial.write("PROXY TCP4 198.51.100.7")
      yield* settle
      yield* TestClock.adjust("4999 millis")
      yield* settle
      // Still waiting: a complete header now is accepted.
      const late = yield* server.connect()
      yield* settle
      yield* TestClock.adjust("1 milli")
      assert.isTrue(yield* silent.closed)
      assert.isTrue(yield* partial.closed)
      yield* late.write(header(1, "198.51.100.8"))
      assert.strictEqual(show(yield* late.reply), "220")
      assert.strictEqual(rec.sessions.length, 1)
    }))

  it.effect("the timeout is an option", () =>
    Effect.gen(function*() {
      const { server } = yield* proxied({ timeout: "30 seconds" })
      const p = yield* server.connect()
      yield* settle
      yield* TestClock.adjust("29 seconds")
      yield* p.write(header(2, "198.51.100.7"))
      assert.strictEqual(show(yield* p.reply), "220")
      const q = yield* server.connect()
      yield* settle
      yield* TestClock.adjust("30 seconds")
      assert.isTrue(yield* q.closed)
    }))

  it.effect("bad trusted networks are a Listen error", () =>
    Effect.gen(function*() {
      for (const trusted of [[], ["10.0.0.0/33"], ["example.com"], ["10.0.0.1/"]]) {
        const error = yield* Effect.flip(proxied({ trusted }))
        assert.strictEqual(error.reason, "Listen", JSON.stringify(trusted))
        assert.include(error.message, "trusted")
      }
    }))
})
