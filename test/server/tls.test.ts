/**
 * STARTTLS (RFC 3207) and implicit TLS: plaintext pipelined after STARTTLS is never acted on,
 * the whole session state starts over, a failed handshake closes the connection, and
 * implicit TLS listeners speak TLS from the first byte. Over the in-memory network (TLS
 * simulated) and real TCP with certificates.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as net from "node:net"
import * as MemoryTransport from "../../src/MemoryTransport.ts"
import * as SmtpServer from "../../src/SmtpServer.ts"
import { makeBackend } from "../support/backend.ts"
import { testCerts } from "../support/certs.ts"
import { dialog, envelope, loopback, type Net, replies, show, start, waitFor } from "../support/server.ts"

const certs = testCerts()
const tls = { key: certs.server.key, cert: certs.server.cert }
const clientTls = { ca: certs.ca, servername: "localhost" }

describe.each<Net>(["memory", "tcp"])("STARTTLS over %s", (net) => {
  it.live("upgrades; EHLO is needed again and the transaction is gone", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, tls })
      assert.strictEqual(s.server.listeners[0]!.tls, "starttls")
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      yield* p.startTls({ ca: certs.ca })
      assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<a@example.com>", "EHLO c", "RCPT TO:<b@example.com>", "DATA"), [
        "503 5.5.1",
        "250",
        "503 5.5.1",
        "503 5.5.1"
      ])
      assert.include(rec.events, "reset")
      const state = rec.sessions[0]!.tls()
      assert.isDefined(state)
      assert.match(state!.protocol ?? "", /^TLSv1\.[23]$/)
      assert.strictEqual(state!.servername, "localhost")
      assert.strictEqual(rec.sessions[0]!.helo(), "c")
      // A whole message over TLS.
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "DATA", "secret\r\n."), ["354", "250 2.0.0"])
      assert.strictEqual(rec.messages[0]!.body, "secret\r\n")
    }))

  it.live("commands pipelined in plaintext after STARTTLS are discarded, never run", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, tls })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      yield* p.write("STARTTLS\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\n")
      assert.strictEqual(show(yield* p.reply), "220 2.0.0")
      yield* p.startTls({ ca: certs.ca })
      // Had the MAIL been run, this would be "503 5.5.1" (sequence) or MAIL would be refused as a second one.
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<good@example.com>", "RCPT TO:<b@example.com>"), [
        "250",
        "250 2.1.0",
        "250 2.1.5"
      ])
      assert.deepStrictEqual(rec.events.filter((e) => e.startsWith("mail:") || e.startsWith("rcpt:")), [
        "mail:good@example.com",
        "rcpt:b@example.com"
      ])
      assert.isTrue(s.logs.some((l) => l.level === "WARN" && JSON.stringify(l.message).includes("discarded")))
    }))

  it.live("STARTTLS twice is 503 5.5.1; with arguments 501; without certificates 502 5.5.1", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, tls })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command("STARTTLS now")), "501 5.5.4")
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      yield* p.startTls({ ca: certs.ca })
      assert.strictEqual(show(yield* p.command("STARTTLS")), "503 5.5.1")

      const plain = yield* start({ net, backend: layer })
      assert.strictEqual(plain.server.listeners[0]!.tls, "none")
      const q = yield* plain.open()
      assert.notInclude((yield* q.command("EHLO c")).lines, "STARTTLS")
      assert.strictEqual(show(yield* q.command("STARTTLS")), "502 5.5.1")
    }))

  it.live("requireTlsForMail: 530 5.7.0 until STARTTLS", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer, tls, requireTlsForMail: true })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>", "STARTTLS"), ["250", "530 5.7.0", "220 2.0.0"])
      yield* p.startTls({ ca: certs.ca })
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>"), ["250", "250 2.1.0"])
    }))

  it.live("implicit TLS: encrypted from the first byte, no STARTTLS offered", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, tls, listen: [{ endpoint: loopback, implicitTls: true }] })
      assert.strictEqual(s.server.listeners[0]!.tls, "implicit")
      const p = yield* s.open({ tls: clientTls })
      const ehlo = yield* p.command("EHLO c")
      assert.notInclude(ehlo.lines, "STARTTLS")
      assert.strictEqual(show(yield* p.command("STARTTLS")), "503 5.5.1")
      assert.isDefined(rec.sessions[0]!.tls())
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "DATA", "x\r\n.", "QUIT"), ["354", "250 2.0.0", "221 2.0.0"])
    }))
})

describe("failed handshakes", () => {
  it.live("TCP: a client that does not speak TLS after 220 is disconnected; the server goes on", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer, tls })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      yield* p.write("EHLO this is not a ClientHello\r\n")
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.logouts(), 1)
      const next = yield* s.open()
      assert.strictEqual(show(yield* next.command("NOOP")), "250 2.0.0")
    }))

  it.live("TCP: a client that refuses the server's certificate ends the connection", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const untrusted = { key: certs.untrusted.key, cert: certs.untrusted.cert }
      const s = yield* start({ net: "tcp", backend: layer, tls: untrusted })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      const upgraded = yield* Effect.exit(p.startTls({ ca: certs.ca }))
      assert.isTrue(Exit.isFailure(upgraded))
      yield* waitFor(() => rec.logouts() === 1)
      assert.isTrue(s.logs.some((l) => l.level === "INFO" && JSON.stringify(l.message).includes("STARTTLS handshake failed")))
    }))

  it.live("TCP: a client that never starts its handshake is closed after timeouts.tlsHandshake", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer, tls, timeouts: { tlsHandshake: "300 millis" } })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      const since = Date.now()
      assert.isTrue(yield* p.closed)
      assert.isBelow(Date.now() - since, 10_000)
      yield* waitFor(() => rec.logouts() === 1)
    }))

  it.live("memory: a handshake that fails closes the connection without a reply", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, tls })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      // Both ends acting as TLS servers: the handshake fails on both sides.
      const failed = yield* Effect.exit(p.transport.upgradeTls({ role: "server", tls }))
      assert.isTrue(Exit.isFailure(failed))
      assert.isTrue(yield* p.closed.pipe(Effect.catch(() => Effect.succeed(true))))
      const next = yield* s.open()
      assert.strictEqual(show(yield* next.command("NOOP")), "250 2.0.0")
    }))

  it.live("TCP: a plaintext client on an implicit TLS port gets nothing; TLS clients are still served", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer, tls, listen: [{ endpoint: loopback, implicitTls: true }] })
      const endpoint = s.endpoint
      if (endpoint._tag !== "Tcp") return assert.fail("expected TCP")
      const closedWith = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const socket = net.connect({ host: endpoint.host, port: endpoint.port })
          let got = ""
          socket.on("data", (b: Buffer) => (got += b.toString("latin1")))
          socket.on("error", () => {})
          socket.on("close", () => resolve(got))
          socket.write("EHLO plaintext\r\n")
        })
      )
      assert.notInclude(closedWith, "220")
      assert.strictEqual(rec.sessions.length, 0)
      const p = yield* s.open({ tls: clientTls })
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
    }))

  it.effect("an implicit TLS listener without certificates is a configuration error", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const exit = yield* Layer.build(
        SmtpServer.layer({ listen: [{ endpoint: loopback, implicitTls: true }] }).pipe(
          Layer.provide(layer),
          Layer.provide(MemoryTransport.layer)
        )
      ).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assert.include(JSON.stringify(exit.cause), "Listen")
    }))
})

describe("STARTTLS and pipelining", () => {
  it.live("replies queued before STARTTLS go out in plaintext before the 220", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, tls })
      const p = yield* s.open()
      yield* p.write("EHLO c\r\nNOOP\r\nSTARTTLS\r\n")
      assert.deepStrictEqual(yield* replies(p, 3), ["250", "250 2.0.0", "220 2.0.0"])
      yield* p.startTls({ ca: certs.ca })
      assert.strictEqual(show(yield* p.command("EHLO c")), "250")
    }))
})
