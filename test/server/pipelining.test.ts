/**
 * PIPELINING (RFC 2920): the replies to a group sent in one write leave in one write, and a
 * peer that stops reading replies stops the server reading commands.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as net from "node:net"
import { makeBackend } from "../support/backend.ts"
import { replies, show, start, waitFor } from "../support/server.ts"

const group = "EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nNOOP\r\n"
const codes = (text: string) => text.split("\r\n").filter((l) => /^\d{3} /.test(l)).map((l) => l.slice(0, 3))

describe("pipelining", () => {
  it.live("in memory: one read of the client sees every reply of the group", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.connect()
      assert.strictEqual((yield* p.reply).code, 220)
      yield* p.transport.write(group)
      // A MemoryTransport read returns exactly one write of the peer.
      const chunk = yield* p.transport.read
      assert.deepStrictEqual(codes(Buffer.from(chunk!).toString("latin1")), ["250", "250", "250", "250", "250"])
      assert.strictEqual(s.tap.writes.length, 2) // the greeting, then the group
    }))

  it.live("over TCP: the server answers a group with one write, and a raw socket reads it at once", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer })
      const endpoint = s.endpoint
      if (endpoint._tag !== "Tcp") return assert.fail("expected a TCP listener")
      const socket = net.connect({ host: endpoint.host, port: endpoint.port })
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      const nextData = () => new Promise<string>((resolve) => socket.once("data", (b: Buffer) => resolve(b.toString("latin1"))))
      const greeting = yield* Effect.promise(nextData)
      assert.match(greeting, /^220 /)
      const answer = nextData()
      socket.write(group)
      assert.deepStrictEqual(codes(yield* Effect.promise(() => answer)), ["250", "250", "250", "250", "250"])
      assert.strictEqual(s.tap.writes.length, 2)
      assert.deepStrictEqual(codes(s.tap.writes[1]!), ["250", "250", "250", "250", "250"])
    }))

  it.live("a command that waits on the client (DATA) flushes the replies before it", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.connect()
      yield* p.reply
      yield* p.write("EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
      assert.deepStrictEqual(yield* replies(p, 4), ["250", "250 2.1.0", "250 2.1.5", "354"])
      // The body and the next group in one write.
      yield* p.write("hello\r\n.\r\nMAIL FROM:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nRSET\r\nQUIT\r\n")
      assert.deepStrictEqual(yield* replies(p, 5), ["250 2.0.0", "250 2.1.0", "250 2.1.5", "250 2.0.0", "221 2.0.0"])
      assert.strictEqual(rec.messages[0]!.body, "hello\r\n")
      // greeting | group up to 354 | the rest
      assert.strictEqual(s.tap.writes.length, 3)
    }))

  it.live("a partial line after a group does not hold the group's replies back", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.connect()
      yield* p.reply
      yield* p.write("NOOP\r\nNOOP\r\nNOO")
      assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "250 2.0.0"])
      yield* p.write("P\r\n")
      assert.deepStrictEqual(yield* replies(p, 1), ["250 2.0.0"])
    }))

  it.live("while 64 replies wait to be written, the server reads no further commands", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ backend: layer, junkCommandLimit: Number.POSITIVE_INFINITY })
      const p = yield* s.connect()
      yield* p.reply
      yield* s.tap.writeGate.close // the client stops reading: the server's writes cannot complete
      yield* p.write("NOOP\r\n".repeat(200))
      yield* waitFor(() => s.tap.heldWrites === 1)
      const reads = s.tap.reads
      yield* p.write("NOOP\r\n".repeat(10))
      // Give the server every chance to read on (it must not).
      for (let i = 0; i < 200; i++) yield* Effect.yieldNow
      yield* Effect.sleep("50 millis")
      assert.strictEqual(s.tap.reads, reads)
      assert.strictEqual(s.tap.heldWrites, 1)

      yield* s.tap.writeGate.open
      const got = yield* replies(p, 210)
      assert.isTrue(got.every((r) => r === "250 2.0.0"))
      // The write that was held carried exactly the 64 waiting replies.
      assert.strictEqual(codes(s.tap.writes[1]!).length, 64)
      assert.strictEqual(show(yield* p.command("QUIT")), "221 2.0.0")
    }))
})
