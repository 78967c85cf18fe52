/**
 * Logs: every line of a connection carries its id and remote address; failures are logged
 * with their cause; message content and credentials never are.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { makeBackend } from "../support/backend.ts"
import { testCerts } from "../support/certs.ts"
import { dialog, drained, envelope, type Net, show, start } from "../support/server.ts"

const certs = testCerts()
const text = (message: unknown) => JSON.stringify(message)

describe.each<Net>(["memory", "tcp"])("logs over %s", (net) => {
  it.live("a connection logs its opening and closing, annotated with its id and the remote address", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command("QUIT")), "221 2.0.0")
      assert.isTrue(yield* p.closed)
      yield* drained(s)
      const local = p.transport.localEndpoint
      if (local?._tag !== "Tcp") return assert.fail("expected a TCP endpoint")
      const remote = `${local.host}:${local.port}`
      const mine = s.logs.filter((l) => l.annotations.remote === remote)
      assert.deepStrictEqual(mine.map((l) => [l.level, text(l.message)]), [
        ["DEBUG", text("connection opened")],
        ["DEBUG", text("connection closed")]
      ])
      assert.isTrue(mine.every((l) => l.annotations.connection === rec.sessions[0]!.id))
    }))

  it.live("two connections are told apart by their annotations", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net, backend: layer })
      yield* s.open()
      yield* s.open()
      yield* s.stop
      const ids = new Set(s.logs.map((l) => l.annotations.connection))
      const remotes = new Set(s.logs.map((l) => l.annotations.remote))
      assert.strictEqual(ids.size, 2)
      assert.strictEqual(remotes.size, 2)
    }))

  it.live("backend failures are logged with their cause and the connection's annotations", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({ mail: () => Effect.fail(new Error("queue directory is read-only")) })
      const s = yield* start({ net, backend: layer })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>"), ["250", "451 4.3.0"])
      const error = s.logs.find((l) => l.level === "ERROR")
      assert.isDefined(error)
      assert.include(error!.cause ?? "", "queue directory is read-only")
      assert.isString(error!.annotations.remote)
      assert.isString(error!.annotations.connection)
    }))
})

describe("what is never logged", () => {
  it.live("message bodies, rejected bodies, and plaintext discarded after STARTTLS", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({
        data: (body) => Stream.runDrain(body).pipe(Effect.andThen(Effect.fail(new Error("spool failure"))))
      })
      const s = yield* start({
        backend: layer,
        maxMessageBytes: 200,
        tls: { key: certs.server.key, cert: certs.server.cert },
        softErrorLimit: 100
      })
      const p = yield* s.open()
      yield* envelope(p)
      yield* dialog(p, "DATA", "SECRET-BODY-ONE\r\n.")
      yield* envelope(p, ["b@example.com"], "RSET")
      yield* dialog(p, "DATA", "SECRET-BODY-TWO\nbare\r\n.")
      yield* envelope(p, ["b@example.com"], "RSET")
      yield* dialog(p, "DATA", "SECRET-BODY-THREE" + "x".repeat(300) + "\r\n.")
      yield* envelope(p, ["b@example.com"], "RSET")
      yield* p.write("BDAT 18 LAST\r\nSECRET-BODY-FOUR\r\n")
      yield* p.reply
      yield* p.write("STARTTLS\r\nSECRET-PIPELINED-COMMAND\r\n")
      yield* p.reply
      yield* p.startTls({ ca: certs.ca })
      yield* p.command("QUIT")
      yield* p.closed
      yield* s.stop
      const all = JSON.stringify(s.logs)
      assert.include(all, "spool failure") // the failure itself is there
      assert.include(all, "discarded")
      for (const secret of ["SECRET-BODY-ONE", "SECRET-BODY-TWO", "SECRET-BODY-THREE", "SECRET-BODY-FOUR", "SECRET-PIPELINED-COMMAND"]) {
        assert.notInclude(all, secret)
      }
    }))
})
