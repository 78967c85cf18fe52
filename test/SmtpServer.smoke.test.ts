import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as Context from "effect/Context"
import { Backend } from "../src/Backend.ts"
import * as NodeTransport from "../src/NodeTransport.ts"
import { SmtpServer, layer } from "../src/SmtpServer.ts"
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
