/**
 * Testing your own backend without a network: the server and the client talk over
 * `MemoryTransport.layer`, so a test runs the real protocol in memory, fast and with no ports.
 * (In a test suite, wrap the same program in `it.effect` from @effect/vitest.)
 *
 * Run in this repository: node_modules/.bin/node --conditions=source examples/test-your-backend.ts
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { Backend } from "effect-smtp/Backend"
import * as MemoryTransport from "effect-smtp/MemoryTransport"
import * as SmtpClient from "effect-smtp/SmtpClient"
import { SmtpError } from "effect-smtp/SmtpError"
import * as SmtpServer from "effect-smtp/SmtpServer"
import assert from "node:assert/strict"

// The backend under test: only accepts mail for known users, keeps what it receives.
const inbox: Array<{ to: ReadonlyArray<string>; body: string }> = []
const MyBackend = Layer.succeed(Backend, Backend.of({
  newSession: () => {
    const to: Array<string> = []
    return Effect.succeed({
      mail: () => Effect.void,
      rcpt: (rcpt) =>
        rcpt === "alice@example.com" ? Effect.sync(() => to.push(rcpt)) : Effect.fail(SmtpError.of(550, [5, 1, 1], "Unknown user")),
      data: (body) =>
        Stream.mkString(Stream.decodeText(body)).pipe(Effect.map((text) => inbox.push({ to: [...to], body: text }))),
      reset: Effect.sync(() => to.splice(0))
    })
  }
}))

const endpoint = { _tag: "Tcp", host: "mx.test", port: 25 } as const

const test = Effect.gen(function*() {
  const result = yield* SmtpClient.sendMail({
    endpoint,
    security: "none",
    from: "app@example.com",
    to: ["alice@example.com", "mallory@example.com"],
    body: "Subject: hi\r\n\r\nhello\r\n"
  })
  assert.deepEqual(result.accepted.map((a) => a.recipient), ["alice@example.com"])
  assert.equal(result.rejected[0]?.error.code, 550)
  assert.deepEqual(inbox, [{ to: ["alice@example.com"], body: "Subject: hi\r\n\r\nhello\r\n" }])
  console.log("backend behaves")
})

const Server = SmtpServer.layer({ listen: [{ endpoint }] }).pipe(Layer.provide(MyBackend))

Effect.runPromise(test.pipe(
  Effect.provide(Server.pipe(Layer.provideMerge(MemoryTransport.layer)))
))
