/**
 * LMTP (RFC 2033): LHLO, and after the body one reply per accepted recipient, in order, with
 * or without the backend's `lmtpData`; over the in-memory network, TCP and Unix sockets.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { SmtpError } from "../../src/SmtpError.ts"
import type { ListenSpec } from "../../src/SmtpServer.ts"
import { collect, makeBackend } from "../support/backend.ts"
import { dialog, drained, type Net, replies, show, start } from "../support/server.ts"

type Where = Net | "unix"

// Unix sockets live in a directory of this file's own, removed at the end.
const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-smtp-lmtp-"))
afterAll(() => fs.rmSync(socketDir, { recursive: true, force: true }))
let sockets = 0

const listenOn = (where: Where): { readonly net: Net; readonly listen?: ReadonlyArray<ListenSpec> } => {
  if (where !== "unix") return { net: where }
  return { net: "tcp", listen: [{ endpoint: { _tag: "Unix", path: path.join(socketDir, `lmtp-${++sockets}.sock`) } }] }
}

const unknownUser = SmtpError.of(550, [5, 1, 1], "No such mailbox")
const overQuota = SmtpError.of(452, [4, 2, 2], "Mailbox full")

describe.each<Where>(["memory", "tcp", "unix"])("LMTP over %s", (where) => {
  it.live("greets as LMTP and answers LHLO with the extensions", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ ...listenOn(where), backend: layer, protocol: "lmtp" })
      const p = yield* s.connect()
      const greeting = yield* p.reply
      assert.strictEqual(show(greeting), "220")
      assert.deepStrictEqual(greeting.lines, ["localhost LMTP service ready"])
      const lhlo = yield* p.command("LHLO client")
      assert.strictEqual(lhlo.lines[0], "localhost Hello client")
      assert.include(lhlo.lines, "PIPELINING")
      assert.include(lhlo.lines, "ENHANCEDSTATUSCODES")
    }))

  it.live("without lmtpData: data's outcome for every accepted recipient, in order, duplicates included", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        rcpt: (to) => to === "nobody@example.com" ? Effect.fail(unknownUser) : Effect.void
      })
      const s = yield* start({ ...listenOn(where), backend: layer, protocol: "lmtp" })
      const p = yield* s.open()
      assert.deepStrictEqual(
        yield* dialog(
          p,
          "LHLO c",
          "MAIL FROM:<a@example.com>",
          "RCPT TO:<one@example.com>",
          "RCPT TO:<nobody@example.com>",
          "RCPT TO:<two@example.com>",
          "RCPT TO:<one@example.com>",
          "DATA"
        ),
        ["250", "250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "250 2.1.5", "354"]
      )
      yield* p.write("Subject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n")
      const after = [yield* p.reply, yield* p.reply, yield* p.reply]
      assert.deepStrictEqual(after.map(show), ["250 2.0.0", "250 2.0.0", "250 2.0.0"])
      assert.deepStrictEqual(after.map((r) => r.text.split(" ")[0]), ["<one@example.com>", "<two@example.com>", "<one@example.com>"])
      assert.strictEqual(show(yield* p.reply), "250 2.0.0") // the NOOP
      assert.strictEqual(rec.messages.length, 1)
    }))

  it.live("without lmtpData: a failing data fails every recipient alike", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({ data: (body) => Stream.runDrain(body).pipe(Effect.andThen(Effect.fail(overQuota))) })
      const s = yield* start({ ...listenOn(where), backend: layer, protocol: "lmtp" })
      const p = yield* s.open()
      yield* dialog(p, "LHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<one@example.com>", "RCPT TO:<two@example.com>")
      assert.deepStrictEqual(yield* dialog(p, "DATA", "body\r\n."), ["354", "452 4.2.2"])
      assert.strictEqual(show(yield* p.reply), "452 4.2.2")
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
    }))

  it.live("with lmtpData: partial failures, one status per recipient in order", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        lmtpData: (body, recipients, r) =>
          collect(body, r, { from: "a@example.com", rcpts: recipients }).pipe(
            Effect.as(recipients.map((to) => to.startsWith("full") ? overQuota : to.startsWith("gone") ? unknownUser : undefined))
          )
      })
      const s = yield* start({ ...listenOn(where), backend: layer, protocol: "lmtp" })
      const p = yield* s.open()
      yield* dialog(p, "LHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<ok@example.com>", "RCPT TO:<full@example.com>", "RCPT TO:<gone@example.com>", "RCPT TO:<ok2@example.com>")
      assert.strictEqual(show(yield* p.command("DATA")), "354")
      yield* p.write("hello\r\n.\r\n")
      assert.deepStrictEqual(yield* replies(p, 4), ["250 2.0.0", "452 4.2.2", "550 5.1.1", "250 2.0.0"])
      assert.include(rec.events, "lmtpData")
      assert.notInclude(rec.events, "data")
      assert.deepStrictEqual(rec.messages[0]!.rcpts, ["ok@example.com", "full@example.com", "gone@example.com", "ok2@example.com"])
    }))

  it.live("with lmtpData: a failure that is not an SmtpError is 451 4.3.0 for each recipient", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({ lmtpData: (body) => Stream.runDrain(body).pipe(Effect.andThen(Effect.fail("store down"))) })
      const s = yield* start({ ...listenOn(where), backend: layer, protocol: "lmtp" })
      const p = yield* s.open()
      yield* dialog(p, "LHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<x@example.com>", "RCPT TO:<y@example.com>", "DATA")
      yield* p.write("body\r\n.\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["451 4.3.0", "451 4.3.0"])
    }))

  it.live("BDAT: the per-recipient replies come after LAST", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        lmtpData: (body, recipients, r) =>
          collect(body, r, { from: "a@example.com", rcpts: recipients }).pipe(Effect.as([undefined, unknownUser]))
      })
      const s = yield* start({ ...listenOn(where), backend: layer, protocol: "lmtp" })
      const p = yield* s.open()
      yield* dialog(p, "LHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<x@example.com>", "RCPT TO:<y@example.com>")
      yield* p.write("BDAT 6\r\nchunk1BDAT 6 LAST\r\nchunk2")
      assert.deepStrictEqual(yield* replies(p, 3), ["250 2.0.0", "250 2.0.0", "550 5.1.1"])
      assert.strictEqual(rec.messages[0]!.body, "chunk1chunk2")
    }))

  it.live("a body over the size limit or with a bare LF: one refusal per recipient", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ ...listenOn(where), backend: layer, protocol: "lmtp", maxMessageBytes: 10 })
      const p = yield* s.open()
      yield* dialog(p, "LHLO c", "MAIL FROM:<a@example.com>", "RCPT TO:<x@example.com>", "RCPT TO:<y@example.com>", "DATA")
      yield* p.write("this body is too long\r\n.\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["552 5.3.4", "552 5.3.4"])
      yield* dialog(p, "MAIL FROM:<a@example.com>", "RCPT TO:<x@example.com>", "RCPT TO:<y@example.com>", "DATA")
      yield* p.write("a\nb\r\n.\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["550 5.5.2", "550 5.5.2"])
      assert.strictEqual(rec.messages.length, 0)
      assert.strictEqual(show(yield* p.command("QUIT")), "221 2.0.0")
      assert.isTrue(yield* p.closed)
      yield* drained(s)
    }))
})

describe("LMTP over a Unix socket", () => {
  it.live("the backend sees no remote address, and the listener reports the path", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const where = listenOn("unix")
      const s = yield* start({ ...where, backend: layer, protocol: "lmtp" })
      const listener = s.server.listeners[0]!
      assert.strictEqual(listener.protocol, "lmtp")
      assert.strictEqual(listener.address, `unix:${(where.listen![0]!.endpoint as { path: string }).path}`)
      const p = yield* s.open()
      yield* p.command("LHLO c")
      assert.strictEqual(rec.sessions[0]!.remoteEndpoint, undefined)
      assert.strictEqual(rec.sessions[0]!.protocol, "lmtp")
    }))
})
