import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as Context from "effect/Context"
import { Backend } from "../src/Backend.ts"
import * as NodeTransport from "../src/NodeTransport.ts"
import * as ConfigProvider from "effect/ConfigProvider"
import { TestClock } from "effect/testing"
import * as MemoryTransport from "../src/MemoryTransport.ts"
import { SmtpServer, layer, layerConfig } from "../src/SmtpServer.ts"
import { Network } from "../src/Transport.ts"
import { show } from "./support/server.ts"
import * as Wire from "./support/wire.ts"

const received: Array<string> = []
const TestBackend = Layer.succeed(Backend, Backend.of({
  newSession: () => Effect.succeed({
    mail: () => Effect.void,
    rcpt: () => Effect.void,
    data: (body) => Stream.mkString(Stream.decodeText(body)).pipe(Effect.map((s) => { received.push(s) })),
    reset: Effect.void
  })
}))

describe("smoke", () => {
  it.live("EHLO MAIL RCPT DATA over TCP", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(layer({ listen: [{ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 0 } }] }).pipe(
        Layer.provide(TestBackend), Layer.provideMerge(NodeTransport.layer)))
      const server = Context.get(ctx, SmtpServer)
      const p = yield* Wire.connect({ endpoint: server.listeners[0]!.endpoint }).pipe(Effect.provide(NodeTransport.layer))
      const greet = yield* p.reply
      assert.strictEqual(greet.code, 220)
      const ehlo = yield* p.command("EHLO client.example")
      console.log(ehlo.lines)
      assert.strictEqual((yield* p.command("MAIL FROM:<a@b.example>")).code, 250)
      assert.strictEqual((yield* p.command("RCPT TO:<c@d.example>")).code, 250)
      assert.strictEqual((yield* p.command("DATA")).code, 354)
      const r = yield* p.command("Subject: hi\r\n\r\n..dot\r\n.")
      console.log(r)
      assert.strictEqual(r.code, 250)
      assert.deepStrictEqual(received, ["Subject: hi\r\n\r\n.dot\r\n"])
      assert.strictEqual((yield* p.command("QUIT")).code, 221)
    }))
})

describe("layerConfig", () => {
  it.live("reads the listeners, domain and limits from Config; overrides win", () =>
    Effect.gen(function*() {
      const env = ConfigProvider.fromEnvRecord({
        SMTP_SERVER_LISTEN: "127.0.0.1:0, 127.0.0.1:0",
        SMTP_SERVER_DOMAIN: "mx.env.example",
        SMTP_SERVER_MAX_RECIPIENTS: "2"
      })
      const ctx = yield* Layer.build(layerConfig({ greeting: "from overrides" }).pipe(
        Layer.provide(TestBackend),
        Layer.provideMerge(NodeTransport.layer),
        Layer.provide(ConfigProvider.layer(env))
      ))
      const server = Context.get(ctx, SmtpServer)
      assert.strictEqual(server.listeners.length, 2)
      const p = yield* Wire.connect({ endpoint: server.listeners[0]!.endpoint }).pipe(Effect.provide(NodeTransport.layer))
      assert.deepStrictEqual((yield* p.reply).lines, ["mx.env.example from overrides"])
      assert.strictEqual((yield* p.command("EHLO c")).code, 250)
      assert.strictEqual((yield* p.command("MAIL FROM:<a@b.example>")).code, 250)
      assert.strictEqual((yield* p.command("RCPT TO:<c@d.example>")).code, 250)
      assert.strictEqual((yield* p.command("RCPT TO:<e@d.example>")).code, 250)
      assert.strictEqual((yield* p.command("RCPT TO:<f@d.example>")).code, 452)
    }))

  it.effect("a bad SMTP_SERVER_LISTEN fails the layer with a Listen error", () =>
    Effect.gen(function*() {
      const env = ConfigProvider.fromEnvRecord({ SMTP_SERVER_LISTEN: "nowhere" })
      const exit = yield* Effect.exit(Layer.build(layerConfig().pipe(
        Layer.provide(TestBackend),
        Layer.provide(NodeTransport.layer),
        Layer.provide(ConfigProvider.layer(env))
      )))
      assert.isTrue(exit._tag === "Failure" && String(exit.cause).includes("SMTP_SERVER_LISTEN"))
    }))

  it.effect("reads the protocol, the AUTH rules and the timeouts; overrides join the timeouts field by field", () =>
    Effect.gen(function*() {
      const env = ConfigProvider.fromEnvRecord({
        SMTP_SERVER_LISTEN: "127.0.0.1:0",
        SMTP_SERVER_PROTOCOL: "lmtp",
        SMTP_SERVER_REQUIRE_AUTH: "true",
        SMTP_SERVER_TIMEOUTS_COMMAND: "10 seconds"
      })
      const ctx = yield* Layer.build(layerConfig({ timeouts: { data: "1 minute" } }).pipe(
        Layer.provide(TestBackend),
        Layer.provideMerge(MemoryTransport.layer),
        Layer.provide(ConfigProvider.layer(env))
      ))
      const server = Context.get(ctx, SmtpServer)
      assert.strictEqual(server.listeners[0]!.protocol, "lmtp")
      const p = Wire.peer(yield* Context.get(ctx, Network).connect({ endpoint: server.listeners[0]!.endpoint }))
      assert.deepStrictEqual((yield* p.reply).lines, ["localhost LMTP service ready"])
      assert.strictEqual((yield* p.command("LHLO c")).code, 250)
      assert.strictEqual(show(yield* p.command("MAIL FROM:<a@b.example>")), "530 5.7.0")
      // The command timeout from the environment, not the default 5 minutes.
      for (let i = 0; i < 100; i++) yield* Effect.yieldNow
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(show(yield* p.reply), "421 4.4.2")
    }))

  it.effect("a variable that does not parse fails the layer, naming it", () =>
    Effect.gen(function*() {
      const env = ConfigProvider.fromEnvRecord({ SMTP_SERVER_TIMEOUTS_DATA: "soon" })
      const exit = yield* Effect.exit(Layer.build(layerConfig().pipe(
        Layer.provide(TestBackend),
        Layer.provide(MemoryTransport.layer),
        Layer.provide(ConfigProvider.layer(env))
      )))
      assert.isTrue(exit._tag === "Failure" && String(exit.cause).includes("SMTP_SERVER_TIMEOUTS_DATA"), String(exit))
    }))
})
