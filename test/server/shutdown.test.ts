/**
 * Closing the server layer's scope: the listeners stop accepting at once, idle connections
 * get 421 4.3.2 at once, a transaction in progress may finish within the grace period (then
 * 421), every session finalizer runs, and nothing is left open.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import * as net from "node:net"
import { makeBackend } from "../support/backend.ts"
import { dialog, envelope, eventually, replies, show, start, type TestServer } from "../support/server.ts"

/** Lets the server run until it waits again. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

const refusesConnections = (s: TestServer) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(Effect.scoped(s.connect()))
    return Exit.isFailure(exit) && JSON.stringify(exit.cause).includes("Connect")
  })

const tcpRefuses = (port: number) =>
  Effect.promise(() =>
    new Promise<string>((resolve) => {
      const socket = net.connect({ host: "127.0.0.1", port })
      socket.once("connect", () => {
        socket.destroy()
        resolve("connected")
      })
      socket.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"))
    })
  )

describe("shutdown", () => {
  it.effect("idle connections get 421 4.3.2 at once; finalizers run; nothing is left; the listener is gone", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer })
      const a = yield* s.open()
      const b = yield* s.open()
      yield* a.command("EHLO c")
      const stopping = yield* Effect.forkChild(s.stop)
      // No clock advance needed: idle connections do not wait for the grace period.
      assert.strictEqual(show(yield* a.reply), "421 4.3.2")
      assert.strictEqual(show(yield* b.reply), "421 4.3.2")
      assert.isTrue(yield* a.closed)
      assert.isTrue(yield* b.closed)
      yield* Fiber.join(stopping)
      assert.strictEqual(rec.logouts(), 2)
      assert.strictEqual(yield* s.server.activeConnections, 0)
      assert.isTrue(yield* refusesConnections(s))
    }))

  it.effect("a transaction in progress may finish within the grace period, then 421 4.3.2", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      const idle = yield* s.open()
      yield* envelope(p)
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      yield* p.write("first half\r\n")
      const stopping = yield* Effect.forkChild(s.stop)
      assert.strictEqual(show(yield* idle.reply), "421 4.3.2")
      yield* settle
      // While the transaction goes on, no new connection is accepted.
      assert.isTrue(yield* refusesConnections(s))
      yield* TestClock.adjust("20 seconds")
      yield* p.write("second half\r\n.\r\nMAIL FROM:<next@example.com>\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "421 4.3.2"])
      assert.isTrue(yield* p.closed)
      yield* Fiber.join(stopping)
      assert.strictEqual(rec.messages[0]!.body, "first half\r\nsecond half\r\n")
      assert.notInclude(rec.events, "mail:next@example.com")
      assert.strictEqual(rec.logouts(), 2)
      assert.strictEqual(yield* s.server.activeConnections, 0)
    }))

  it.effect("a transaction still open after the grace period (30 s by default) gets 421 4.3.2", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      const written = s.tap.writes.length
      const stopping = yield* Effect.forkChild(s.stop)
      yield* settle
      yield* TestClock.adjust("29 seconds")
      yield* settle
      assert.strictEqual(s.tap.writes.length, written)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(show(yield* p.reply), "421 4.3.2")
      assert.isTrue(yield* p.closed)
      yield* Fiber.join(stopping)
      assert.strictEqual(rec.logouts(), 1)
      assert.strictEqual(rec.messages.length, 0)
      assert.strictEqual(yield* s.server.activeConnections, 0)
    }))

  it.effect("timeouts.shutdown overrides it; a backend stuck in data is interrupted and its finalizer runs", () =>
    Effect.gen(function*() {
      const never = yield* Deferred.make<void>()
      const { layer, rec } = makeBackend({
        data: (body) => Stream.runDrain(Stream.take(body, 1)).pipe(Effect.andThen(Deferred.await(never)))
      })
      const s = yield* start({ backend: layer, timeouts: { shutdown: "5 seconds" } })
      const p = yield* s.open()
      yield* envelope(p)
      assert.deepStrictEqual(yield* dialog(p, "DATA"), ["354"])
      yield* p.write("body\r\n.\r\n")
      yield* settle
      const stopping = yield* Effect.forkChild(s.stop)
      yield* settle
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(show(yield* p.reply), "421 4.3.2")
      assert.isTrue(yield* p.closed)
      yield* Fiber.join(stopping)
      assert.strictEqual(rec.logouts(), 1)
      assert.strictEqual(rec.messages.length, 0)
    }))

  it.effect("a peer that reads nothing cannot hold the shutdown: the 421 is given up after 5 s", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer, timeouts: { shutdown: "1 second" } })
      const p = yield* s.open()
      yield* envelope(p)
      yield* s.tap.writeGate.close
      const stopping = yield* Effect.forkChild(s.stop)
      yield* settle
      yield* TestClock.adjust("1 second")
      yield* eventually(() => s.tap.heldWrites === 1)
      yield* TestClock.adjust("5 seconds")
      yield* Fiber.join(stopping)
      assert.strictEqual(rec.logouts(), 1)
      assert.strictEqual(yield* s.server.activeConnections, 0)
      assert.isTrue(yield* p.closed)
    }))

  it.effect("a BDAT transfer between chunks counts as a transaction in progress", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write("BDAT 4\r\nabcd")
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      const stopping = yield* Effect.forkChild(s.stop)
      yield* settle
      yield* TestClock.adjust("10 seconds")
      yield* p.write("BDAT 2 LAST\r\nef")
      assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "421 4.3.2"])
      yield* Fiber.join(stopping)
      assert.strictEqual(rec.messages[0]!.body, "abcdef")
    }))

  it.live("over TCP: idle clients are told at once, the port refuses, and stopping does not wait for the grace period", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer })
      const endpoint = s.endpoint
      if (endpoint._tag !== "Tcp") return assert.fail("expected TCP")
      const peers = [yield* s.open(), yield* s.open(), yield* s.open()]
      yield* peers[0]!.command("EHLO c")
      const started = Date.now()
      yield* s.stop
      assert.isBelow(Date.now() - started, 10_000)
      for (const p of peers) {
        assert.strictEqual(show(yield* p.reply), "421 4.3.2")
        assert.isTrue(yield* p.closed)
      }
      assert.strictEqual(rec.logouts(), 3)
      assert.strictEqual(yield* s.server.activeConnections, 0)
      assert.strictEqual(yield* tcpRefuses(endpoint.port), "ECONNREFUSED")
    }))

  it.live("over TCP: while a transaction finishes, new connections are refused", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer })
      const endpoint = s.endpoint
      if (endpoint._tag !== "Tcp") return assert.fail("expected TCP")
      const p = yield* s.open()
      yield* envelope(p)
      const stopping = yield* Effect.forkChild(s.stop)
      // Refused within moments, long before the grace period (30 s) is over.
      const since = Date.now()
      let answer = yield* tcpRefuses(endpoint.port)
      while (answer !== "ECONNREFUSED" && Date.now() - since < 5_000) answer = yield* tcpRefuses(endpoint.port)
      assert.strictEqual(answer, "ECONNREFUSED")
      assert.deepStrictEqual(yield* dialog(p, "DATA", "done\r\n."), ["354", "250 2.0.0"])
      assert.strictEqual(show(yield* p.reply), "421 4.3.2")
      yield* Fiber.join(stopping)
    }))
})
