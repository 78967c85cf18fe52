/**
 * Resource exhaustion: connection floods beyond `maxConnections` and `maxConnectionsPerIp`
 * (421 4.7.0 at once, the server still serving within its limits afterwards), lines of 10 MB
 * without a line end (never buffered beyond the line limit), command storms (answered in order,
 * and a peer that does not read its replies stops the server reading, instead of making it queue
 * replies without end), and error storms (cut off at the error limit, the rest never run).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as net from "node:net"
import * as Sasl from "../../src/Sasl.ts"
import type { Endpoint } from "../../src/Transport.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, envelope, type Net, replies, show, start, waitFor } from "../support/server.ts"
import { memoryAttack, openSockets, servesNormally, settle } from "./support/hostile.ts"
import { parseTranscript, showReply } from "./support/transcript.ts"

interface Held {
  readonly socket: net.Socket
  /** The first reply line. */
  readonly greeting: string
  /** Resolves when the server closes the connection. */
  readonly closed: Promise<void>
}

/** A raw TCP connection held open for the test's scope, with the server's first line. */
const hold = (endpoint: Endpoint, localAddress?: string): Effect.Effect<Held, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<Held, Error>((resume) => {
      if (endpoint._tag !== "Tcp") return resume(Effect.fail(new Error("needs TCP")))
      const socket = net.connect({ host: endpoint.host, port: endpoint.port, ...(localAddress === undefined ? {} : { localAddress }) })
      let text = ""
      const closed = new Promise<void>((r) => socket.once("close", () => r()))
      socket.on("error", () => {})
      socket.on("data", (b: Buffer) => {
        const before = text.length
        text += b.toString("latin1")
        const nl = text.indexOf("\r\n")
        if (nl >= 0 && before <= nl) resume(Effect.succeed({ socket, greeting: text.slice(0, nl), closed }))
      })
      socket.once("close", () => resume(Effect.fail(new Error(`closed before a reply: ${JSON.stringify(text)}`))))
    }),
    (h) => Effect.sync(() => h.socket.destroy())
  )

describe("connection floods over TCP", () => {
  it.live("beyond maxConnections: 421 4.7.0 and closed at once; within the limit, served", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer, maxConnections: 8, maxConnectionsPerIp: 1000 })
      const sockets = openSockets()
      const flood = yield* Effect.scoped(Effect.gen(function*() {
        const held = yield* Effect.forEach(Array.from({ length: 40 }), () => hold(s.endpoint), { concurrency: "unbounded" })
        const accepted = held.filter((h) => h.greeting.startsWith("220 "))
        const refused = held.filter((h) => h.greeting.startsWith("421 4.7.0 "))
        // The refused are closed by the server, without waiting for anything from them.
        yield* Effect.promise(() => Promise.all(refused.map((h) => h.closed)))
        assert.strictEqual(yield* s.server.activeConnections, 8)
        return { accepted: accepted.length, refused: refused.length }
      }))
      assert.deepStrictEqual(flood, { accepted: 8, refused: 32 })
      assert.strictEqual(rec.sessions.length, 8) // no session for a refused connection
      yield* Effect.scoped(servesNormally(s, rec))
      yield* waitFor(() => openSockets() <= sockets)
    }))

  it.live("beyond maxConnectionsPerIp: that address gets 421 4.7.0, another is served", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer, maxConnectionsPerIp: 5 })
      yield* Effect.scoped(Effect.gen(function*() {
        const held = yield* Effect.forEach(Array.from({ length: 20 }), () => hold(s.endpoint, "127.0.0.1"), { concurrency: "unbounded" })
        assert.strictEqual(held.filter((h) => h.greeting.startsWith("220 ")).length, 5)
        const refused = held.filter((h) => h.greeting.startsWith("421 4.7.0 "))
        assert.strictEqual(refused.length, 15)
        assert.include(refused[0]!.greeting, "your address")
        // Linux routes all of 127/8 to loopback: a second address is a different client.
        if (process.platform === "linux") {
          const other = yield* hold(s.endpoint, "127.0.0.2")
          assert.match(other.greeting, /^220 /)
        }
      }))
      yield* Effect.scoped(servesNormally(s, rec))
    }))
})

describe.each<Net>(["memory", "tcp"])("a 10 MB line without a line end over %s", (net) => {
  const tenMegabytes = 10 * 1024 * 1024
  const piece = "z".repeat(64 * 1024)

  it.live("as a command: 500 5.5.2, closed, and at most the line limit plus one read buffered", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      const before = s.tap.bytesRead
      yield* p.write("NOOP ")
      // Written in pieces, as a socket would deliver them; the server stops reading long before the end.
      const writer = yield* Effect.forkChild(Effect.gen(function*() {
        for (let sent = 0; sent < tenMegabytes; sent += piece.length) yield* p.write(piece)
      }).pipe(Effect.ignore))
      assert.strictEqual(show(yield* p.reply), "500 5.5.2")
      yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
      yield* Fiber.join(writer)
      // The limit is 12288 octets (the longest SASL line); one read adds at most one socket buffer.
      assert.isBelow(s.tap.bytesRead - before, 12_288 + (net === "memory" ? piece.length : 1024 * 1024))
      yield* Effect.scoped(servesNormally(s, rec))
    }))

  it.live("as a SASL response: 500 5.5.2, closed, equally bounded", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({ auth: Sasl.serverMechanisms({ anonymous: () => Effect.succeed({ identity: "x" }) }) })
      const s = yield* start({ net, backend: layer, allowInsecureAuth: true })
      const p = yield* s.open()
      yield* p.command("EHLO c.example")
      assert.strictEqual(show(yield* p.command("AUTH ANONYMOUS")), "334")
      const before = s.tap.bytesRead
      const writer = yield* Effect.forkChild(Effect.gen(function*() {
        for (let sent = 0; sent < tenMegabytes; sent += piece.length) yield* p.write(piece)
      }).pipe(Effect.ignore))
      assert.strictEqual(show(yield* p.reply), "500 5.5.2")
      yield* Fiber.join(writer)
      assert.isBelow(s.tap.bytesRead - before, 12_288 + (net === "memory" ? piece.length : 1024 * 1024))
      yield* Effect.scoped(servesNormally(s, rec))
    }))

  it.live("inside a message body: streamed, then refused after the real end as over maxBodyLineLength (550 5.6.0)", () =>
    Effect.gen(function*() {
      let received = 0
      const { layer, rec } = makeBackend({ data: (body) => Stream.runForEach(body, (c) => Effect.sync(() => void (received += c.length))) })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      for (let sent = 0; sent < tenMegabytes; sent += piece.length) yield* p.write(piece)
      yield* p.write("\r\n.\r\n")
      assert.strictEqual(show(yield* p.reply), "550 5.6.0")
      // The backend's stream failed once the line crossed 1 MiB: nothing was stored.
      assert.isBelow(received, 2 * 1024 * 1024)
      assert.strictEqual(rec.messages.length, 0)
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
    }))

  it.live("inside a message body with maxBodyLineLength lifted it is just data: accepted, streamed to the backend", () =>
    Effect.gen(function*() {
      let received = 0
      const { layer } = makeBackend({ data: (body) => Stream.runForEach(body, (c) => Effect.sync(() => void (received += c.length))) })
      const s = yield* start({ net, backend: layer, maxBodyLineLength: 0 })
      const p = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      for (let sent = 0; sent < tenMegabytes; sent += piece.length) yield* p.write(piece)
      yield* p.write("\r\n.\r\n")
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.strictEqual(received, tenMegabytes + 2)
    }))
})

describe("command storms", () => {
  it.live("TCP: 20,000 pipelined NOOPs are all answered, in order, and the conversation goes on", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer, junkCommandLimit: Number.POSITIVE_INFINITY })
      const p = yield* s.open()
      yield* p.write("NOOP\r\n".repeat(20_000) + "EHLO c.example\r\n")
      const got = yield* replies(p, 20_001)
      assert.isTrue(got.slice(0, 20_000).every((r) => r === "250 2.0.0"))
      assert.strictEqual(got[20_000], "250")
      yield* envelope(p, ["rcpt@example.com"], "RSET")
      assert.deepStrictEqual(yield* dialog(p, "DATA", "after the storm\r\n.", "QUIT"), ["354", "250 2.0.0", "221 2.0.0"])
      assert.strictEqual(rec.messages.length, 1)
    }))

  it.live("TCP: a peer that never reads its replies stops the server reading, instead of piling up replies", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer })
      if (s.endpoint._tag !== "Tcp") return assert.fail("expected TCP")
      const socket = net.connect({ host: s.endpoint.host, port: s.endpoint.port })
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      socket.on("error", () => {})
      socket.pause() // never read
      // 2 MB of EHLO (8 bytes each, about 150 bytes of reply): 40 MB of replies if all were answered.
      const storm = Buffer.from("EHLO c\r\n".repeat(256 * 1024))
      socket.write(storm)
      const stalled = () =>
        Effect.gen(function*() {
          let last = -1
          let still = 0
          yield* waitFor(() => {
            still = s.tap.bytesRead === last ? still + 1 : 0
            last = s.tap.bytesRead
            return still >= 50
          }, 30_000)
          return last
        })
      const before = yield* stalled()
      // What it has read is what the kernel buffers hold in replies, not the whole storm.
      assert.isBelow(before, storm.length / 2, "the server kept reading while nobody read its replies")
      // Reading again lets the conversation go on.
      socket.resume()
      yield* waitFor(() => s.tap.bytesRead > before)
      socket.destroy()
      yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
    }))

  it.effect("memory: 10,000 bad commands pipelined are cut off at the 20th error; the rest never runs", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer })
      const storm = "RCPT TO:<a@b.example>\r\n".repeat(10_000) + "EHLO c.example\r\nMAIL FROM:<late@example.com>\r\n"
      const text = yield* memoryAttack(s, [Buffer.from(storm, "latin1")])
      const t = parseTranscript(text, { complete: true, closedByServer: true })
      assert.deepStrictEqual(t.problems, [])
      assert.deepStrictEqual(t.replies.slice(1).map(showReply).map((r) => r.slice(0, 9)), [
        ...Array.from({ length: 20 }, () => "503 5.5.1"),
        "421 4.7.0"
      ])
      assert.notInclude(rec.events, "mail:late@example.com")
      yield* settle
      assert.strictEqual(yield* s.server.activeConnections, 0)
    }))
})
