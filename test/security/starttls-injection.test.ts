/**
 * STARTTLS command injection (RFC 3207 5, the CVE-2011-0411 family), server side, over real
 * TCP and TLS: whatever a man in the middle appends in plaintext after STARTTLS (in the same
 * packet, in a packet of its own, half a line, AUTH credentials) is never executed and never
 * answered inside the encrypted session. Either the handshake fails and the connection closes,
 * or the encrypted session starts clean: its first reply answers the client's own EHLO.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fc from "fast-check"
import { makeBackend } from "../support/backend.ts"
import { testCerts } from "../support/certs.ts"
import { start, waitFor } from "../support/server.ts"
import { conversation } from "./support/arbitraries.ts"
import { property } from "./support/fuzz.ts"
import { errorLogs } from "./support/hostile.ts"
import * as Raw from "./support/rawPeer.ts"

const certs = testCerts()
const tls = { key: certs.server.key, cert: certs.server.cert }

const injected = "MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.com>\r\n"

/** The reply's code and enhanced code: "250 2.1.0", or "250" for EHLO. */
const codeOf = (reply: string) => /^(\d{3})[ -](\d\.\d{1,3}\.\d{1,3})?/.exec(reply)?.slice(1).filter(Boolean).join(" ") ?? reply

const target = (options: { readonly requireAuth?: boolean } = {}) =>
  Effect.gen(function*() {
    const { layer, rec } = makeBackend()
    const s = yield* start({ net: "tcp", backend: layer, tls, ...options })
    return { s, rec }
  })

/** After the handshake: the first encrypted reply must be the one to our EHLO, then a clean transaction. */
const cleanSession = (p: Raw.RawPeer) =>
  Effect.gen(function*() {
    yield* p.write("EHLO secure.example\r\n")
    const ehlo = yield* p.reply
    assert.match(ehlo, /^250-localhost Hello secure\.example\r\n/, "the first encrypted reply answers EHLO")
    yield* p.write("MAIL FROM:<good@example.com>\r\n")
    assert.strictEqual(codeOf(yield* p.reply), "250 2.1.0")
    yield* p.write("RCPT TO:<rcpt@example.com>\r\n")
    assert.strictEqual(codeOf(yield* p.reply), "250 2.1.5")
    assert.strictEqual(p.buffered(), "", "no reply to anything injected")
  })

const mailEvents = (events: ReadonlyArray<string>) => events.filter((e) => e.startsWith("mail:") || e.startsWith("rcpt:"))

describe("STARTTLS injection over TCP and TLS", () => {
  it.live("commands in the same packet as STARTTLS are discarded", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* target()
      const p = yield* Raw.connect(s.endpoint)
      assert.strictEqual(codeOf(yield* p.reply), "220")
      yield* p.write("EHLO c.example\r\n")
      yield* p.reply
      yield* p.write("STARTTLS\r\n" + injected)
      assert.strictEqual(codeOf(yield* p.reply), "220 2.0.0")
      assert.strictEqual(yield* p.startTls({ ca: certs.ca }), "ok")
      yield* cleanSession(p)
      assert.deepStrictEqual(mailEvents(rec.events), ["mail:good@example.com", "rcpt:rcpt@example.com"])
      assert.isTrue(s.logs.some((l) => l.level === "WARN" && JSON.stringify(l.message).includes("discarded")))
    }))

  it.live("commands in a packet of their own, sent before the 220 arrives: discarded, or the handshake fails", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* target()
      let upgraded = 0
      for (let i = 0; i < 10; i++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const p = yield* Raw.connect(s.endpoint)
          yield* p.reply
          yield* p.write("EHLO c.example\r\n")
          yield* p.reply
          yield* p.write("STARTTLS\r\n")
          yield* p.write(injected)
          assert.strictEqual(codeOf(yield* p.reply), "220 2.0.0")
          // Bytes the server had not read yet go to its TLS engine, where they break the handshake.
          if ((yield* p.startTls({ ca: certs.ca })) === "ok") {
            upgraded++
            yield* cleanSession(p)
          }
        }))
      }
      assert.notInclude(rec.events, "mail:evil@attacker.example")
      assert.notInclude(rec.events, "rcpt:victim@example.com")
      assert.strictEqual(rec.events.filter((e) => e === "mail:good@example.com").length, upgraded)
      yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
    }))

  it.live("plaintext after the 220, before the ClientHello: the handshake fails and nothing runs", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* target()
      const p = yield* Raw.connect(s.endpoint)
      yield* p.reply
      yield* p.write("EHLO c.example\r\nSTARTTLS\r\n")
      yield* p.reply
      assert.strictEqual(codeOf(yield* p.reply), "220 2.0.0")
      yield* p.write(injected)
      assert.strictEqual(yield* p.startTls({ ca: certs.ca }), "failed")
      assert.deepStrictEqual(mailEvents(rec.events), [])
      yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
      assert.strictEqual(rec.logouts(), 1)
    }))

  it.live("half a command in plaintext is not completed by the encrypted bytes after it", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* target()
      const p = yield* Raw.connect(s.endpoint)
      yield* p.reply
      yield* p.write("EHLO c.example\r\n")
      yield* p.reply
      yield* p.write("STARTTLS\r\nMAIL FROM:<ev")
      assert.strictEqual(codeOf(yield* p.reply), "220 2.0.0")
      assert.strictEqual(yield* p.startTls({ ca: certs.ca }), "ok")
      yield* p.write("il@attacker.example>\r\n")
      // Had the plaintext half been kept, this would be "503 5.5.1" (MAIL before EHLO).
      assert.strictEqual(codeOf(yield* p.reply), "500 5.5.2")
      yield* cleanSession(p)
      assert.deepStrictEqual(mailEvents(rec.events), ["mail:good@example.com", "rcpt:rcpt@example.com"])
    }))

  it.live("injected AUTH does not authenticate the encrypted session", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* target({ requireAuth: true })
      const p = yield* Raw.connect(s.endpoint)
      yield* p.reply
      yield* p.write("EHLO c.example\r\n")
      yield* p.reply
      yield* p.write(`STARTTLS\r\nAUTH PLAIN ${Buffer.from("\0user\0pass").toString("base64")}\r\nEHLO evil.example\r\n${injected}`)
      assert.strictEqual(codeOf(yield* p.reply), "220 2.0.0")
      assert.strictEqual(yield* p.startTls({ ca: certs.ca }), "ok")
      yield* p.write("EHLO secure.example\r\n")
      assert.match(yield* p.reply, /^250-localhost Hello secure\.example\r\n/)
      yield* p.write("MAIL FROM:<good@example.com>\r\n")
      assert.strictEqual(codeOf(yield* p.reply), "530 5.7.0")
      assert.strictEqual(rec.sessions[0]!.authenticatedAs(), undefined)
      assert.deepStrictEqual(mailEvents(rec.events), [])
    }))

  it.live("any plaintext appended to STARTTLS, cut anywhere: never executed, never answered", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* target()
      yield* property("starttls: injected garbage", fc.tuple(conversation, fc.boolean()), ([c, samePacket]) =>
        Effect.scoped(Effect.gen(function*() {
          const before = rec.events.length
          const p = yield* Raw.connect(s.endpoint)
          yield* p.reply
          yield* p.write("EHLO c.example\r\n")
          yield* p.reply
          if (samePacket) {
            yield* p.write("STARTTLS\r\n" + c.text)
          } else {
            yield* p.write("STARTTLS\r\n")
            yield* p.write(c.text)
          }
          assert.strictEqual(codeOf(yield* p.reply), "220 2.0.0")
          const outcome = yield* p.startTls({ ca: certs.ca })
          if (outcome === "ok") yield* cleanSession(p)
          const events = mailEvents(rec.events.slice(before))
          assert.deepStrictEqual(events, outcome === "ok" ? ["mail:good@example.com", "rcpt:rcpt@example.com"] : [])
        })), { runs: 15, shrink: false })
      yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
      assert.strictEqual(rec.logouts(), rec.sessions.length)
      assert.deepStrictEqual(errorLogs(s), [])
    }))
})
