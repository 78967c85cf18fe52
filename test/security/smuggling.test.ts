/**
 * SMTP smuggling, end to end: a sender hides a second transaction inside DATA behind a fake
 * end of data ("\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r\n.\r" and relatives), hoping a
 * server that ends the body there runs the rest as commands.
 *
 * Under every bare-line-ending policy and however the bytes are cut into packets: exactly one
 * message reaches the backend (none under "reject", whose 550 refuses the whole body), the
 * smuggled MAIL/RCPT/DATA are never executed, and the conversation stays in step (the command
 * after the real end is answered as a command). The client cannot be made to smuggle either:
 * whatever the body, it reaches the server as one message.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fc from "fast-check"
import type { BareLineEndingPolicy } from "../../src/internal/codec/DotCodec.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import { Network } from "../../src/Transport.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, envelope, type Net, replies, show, start } from "../support/server.ts"
import { property } from "./support/fuzz.ts"
import { fromLatin1, split } from "./support/hostile.ts"

/**
 * Fake ends of data: the five of the 2023 smuggling research, and relatives. (Not "\r\r\n.\r\n":
 * it holds a real CRLF "." CRLF, which ends the data on every server.)
 */
const separators = ["\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r\n.\r", "\r\n.\r\r\n", "\n\r.\r\n", "\n..\n", "\r\n\0.\r\n", "\r\n .\r\n"]

/** A CR or LF that is not part of a CRLF pair. */
const hasBareLineEnding = (text: string) => /\r(?!\n)|(?<!\r)\n/.test(text)

/** The smuggled transaction, its lines ended as the attacker likes. */
const smuggled = (end: string) =>
  ["MAIL FROM:<evil@attacker.example>", "RCPT TO:<victim@example.com>", "DATA", "From: ceo@example.com", "Subject: forged", "", "pay now"]
    .map((l) => l + end)
    .join("")

const attack = fc.record({
  separator: fc.constantFrom(...separators),
  tailEnd: fc.constantFrom("\r\n", "\n", "\r"),
  // The fake end, repeated or not, with the smuggled end of data in the smuggled style.
  doubled: fc.boolean(),
  cuts: fc.array(fc.nat(), { maxLength: 10 })
})

const policies: ReadonlyArray<BareLineEndingPolicy> = ["reject", "normalize", "allow"]

describe.each(policies)("smuggling under bareLineEndings %s", (policy) => {
  describe.each<Net>(["memory", "tcp"])("over %s", (net) => {
    it.live("one message or none; the smuggled commands never run", () =>
      Effect.gen(function*() {
        const { layer, rec } = makeBackend()
        const s = yield* start({ net, backend: layer, bareLineEndings: policy })
        yield* property(`smuggling ${policy} ${net}`, attack, (a) =>
          Effect.scoped(Effect.gen(function*() {
            const before = { events: rec.events.length, messages: rec.messages.length, failed: rec.failedBodies.length }
            const p = yield* s.open()
            yield* envelope(p)
            assert.strictEqual(show(yield* p.command("DATA")), "354")
            // ("x": a smuggled part ending in CR followed by a separator starting with LF would
            // form a real CRLF "." CRLF.)
            const fake = a.doubled ? a.separator + smuggled(a.tailEnd) + "x" + a.separator : a.separator
            const body = "Subject: hello\r\n\r\nhi" + fake + smuggled(a.tailEnd) + "\r\n"
            for (const chunk of split(fromLatin1(body + ".\r\nNOOP\r\n"), a.cuts)) yield* p.write(chunk)
            const refused = policy === "reject" && hasBareLineEnding(body)
            assert.deepStrictEqual(yield* replies(p, 2), [refused ? "550 5.5.2" : "250 2.0.0", "250 2.0.0"])
            // Nothing after the fake end was taken for a command: no second MAIL, RCPT or DATA.
            const events = rec.events.slice(before.events)
            assert.deepStrictEqual(events.filter((e) => e.startsWith("mail:") || e.startsWith("rcpt:") || e === "data"), [
              "mail:sender@example.com",
              "rcpt:rcpt@example.com",
              "data"
            ])
            const stored = rec.messages.slice(before.messages)
            if (refused) {
              assert.strictEqual(stored.length, 0)
              assert.strictEqual(rec.failedBodies.length - before.failed, 1)
            } else {
              assert.strictEqual(stored.length, 1)
              // The smuggled transaction is part of the one message, as text.
              assert.include(stored[0]!.body, "MAIL FROM:<evil@attacker.example>")
              assert.isTrue(stored[0]!.body.endsWith(`pay now${policy === "normalize" ? "\r\n" : a.tailEnd}\r\n`))
              if (policy !== "allow") assert.isFalse(hasBareLineEnding(stored[0]!.body))
            }
            // Still in step: a new transaction works on the same connection.
            assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<next@example.com>", "RCPT TO:<rcpt@example.com>", "DATA", "ok\r\n.", "QUIT"), [
              "250 2.1.0",
              "250 2.1.5",
              "354",
              "250 2.0.0",
              "221 2.0.0"
            ])
          })), { runs: net === "memory" ? 40 : 12, shrink: net === "memory" })
      }))
  })

  it.live("BDAT carries a fake end of data as plain bytes: one message (the policy applies to its bare line endings)", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer, bareLineEndings: policy })
      const p = yield* s.open()
      yield* envelope(p)
      const content = separators.map((sep) => "x" + sep + smuggled("\r\n") + ".\r\n").join("")
      yield* p.write(`BDAT ${content.length} LAST\r\n${content}NOOP\r\n`)
      assert.deepStrictEqual(yield* replies(p, 2), [policy === "reject" ? "550 5.5.2" : "250 2.0.0", "250 2.0.0"])
      assert.strictEqual(rec.events.filter((e) => e.startsWith("mail:")).length, 1)
      assert.strictEqual(rec.messages.length, policy === "reject" ? 0 : 1)
      if (policy === "allow") assert.strictEqual(rec.messages[0]!.body, content)
      if (policy === "normalize") assert.strictEqual(rec.messages[0]!.body, content.replace(/\r\n|\r|\n/g, "\r\n"))
    }))

  it.effect("the client sends any body as one message, whatever fake ends it holds", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ backend: layer, bareLineEndings: policy })
      const body = "Subject: hello\r\n\r\nhi" + separators.map((sep) => sep + smuggled("\n")).join("") + "\n.\n"
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* SmtpClient.connect({ endpoint: s.endpoint, security: "none" })
        return yield* client.send({ from: "sender@example.com", to: "rcpt@example.com", body })
      })).pipe(Effect.provideService(Network, s.network))
      assert.strictEqual(result.reply.code, 250)
      // Accepted under every policy: the client put no bare CR or LF on the wire.
      assert.deepStrictEqual(rec.events.filter((e) => e.startsWith("mail:") || e.startsWith("rcpt:")), [
        "mail:sender@example.com",
        "rcpt:rcpt@example.com"
      ])
      assert.strictEqual(rec.messages.length, 1)
      const stored = rec.messages[0]!.body
      assert.include(stored, "MAIL FROM:<evil@attacker.example>")
      assert.isFalse(hasBareLineEnding(stored))
    }))
})
