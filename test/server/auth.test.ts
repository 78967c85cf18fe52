/**
 * AUTH (RFC 4954) through the Sasl mechanisms a session offers: where it is offered, PLAIN
 * and LOGIN exchanges, cancel, base64 errors, one success per session, failed attempts,
 * requireAuth, and that no password reaches the logs.
 */
import * as NodeCrypto from "@effect/platform-node/NodeCrypto"
import { assert, describe, it } from "@effect/vitest"
import * as Digest from "effect/crypto/Digest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Sasl from "../../src/Sasl.ts"
import { makeBackend } from "../support/backend.ts"
import { testCerts } from "../support/certs.ts"
import { dialog, type Net, show, start, type StartOptions } from "../support/server.ts"

const certs = testCerts()
const tls = { key: certs.server.key, cert: certs.server.cert }
const PASSWORD = "c0rrect-h0rse-battery"
const users: Record<string, string> = { alice: PASSWORD }
const auth = Sasl.serverMechanisms({
  password: Sasl.passwordVerifier((name) => Effect.succeed(users[name] === undefined ? undefined : Redacted.make(users[name]!)))
})
const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")
const plain = (user: string, password: string) => b64(`\0${user}\0${password}`)

const server = (net: Net, options: Partial<StartOptions> = {}) =>
  Effect.gen(function*() {
    const backend = makeBackend({ auth })
    const s = yield* start({ net, backend: backend.layer, allowInsecureAuth: true, softErrorLimit: 100, ...options })
    return { s, rec: backend.rec }
  })

describe.each<Net>(["memory", "tcp"])("AUTH over %s", (net) => {
  it.live("not offered nor accepted before TLS unless allowInsecureAuth; offered after STARTTLS", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net, { allowInsecureAuth: false, tls })
      const p = yield* s.open()
      const before = yield* p.command("EHLO c")
      assert.isFalse(before.lines.some((l) => l.startsWith("AUTH")))
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "538 5.7.11")
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      yield* p.startTls({ ca: certs.ca })
      const after = yield* p.command("EHLO c")
      assert.include(after.lines, "AUTH PLAIN LOGIN")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "235 2.7.0")
    }))

  it.live("PLAIN with an initial response; the identity reaches the session; no second AUTH", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(net)
      const p = yield* s.open()
      assert.include((yield* p.command("EHLO c")).lines, "AUTH PLAIN LOGIN")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "235 2.7.0")
      assert.strictEqual(rec.sessions[0]!.authenticatedAs(), "alice")
      // Once authenticated, AUTH is neither advertised nor accepted again.
      assert.isFalse((yield* p.command("EHLO c")).lines.some((l) => l.startsWith("AUTH")))
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "503 5.5.1")
      assert.strictEqual(show(yield* p.command("RSET")), "250 2.0.0")
      assert.strictEqual(rec.sessions[0]!.authenticatedAs(), "alice")
      assert.deepStrictEqual(yield* dialog(p, "MAIL FROM:<alice@example.com> AUTH=alice@example.com"), ["250 2.1.0"])
      assert.strictEqual(rec.mailOptions[0]!.auth, "alice@example.com")
    }))

  it.live("PLAIN without an initial response: an empty 334, then the response", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net)
      const p = yield* s.open()
      yield* p.command("EHLO c")
      const challenge = yield* p.command("AUTH PLAIN")
      assert.strictEqual(challenge.code, 334)
      assert.deepStrictEqual(challenge.lines, [""])
      assert.strictEqual(show(yield* p.command(plain("alice", PASSWORD))), "235 2.7.0")
    }))

  it.live("LOGIN: Username:, Password:; the initial response is taken as the username", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net)
      const p = yield* s.open()
      yield* p.command("EHLO c")
      const u = yield* p.command("auth login")
      assert.deepStrictEqual([u.code, Buffer.from(u.lines[0]!, "base64").toString()], [334, "Username:"])
      const w = yield* p.command(b64("alice"))
      assert.deepStrictEqual([w.code, Buffer.from(w.lines[0]!, "base64").toString()], [334, "Password:"])
      assert.strictEqual(show(yield* p.command(b64(PASSWORD))), "235 2.7.0")

      const q = yield* s.open()
      yield* q.command("EHLO c")
      const w2 = yield* q.command(`AUTH LOGIN ${b64("alice")}`)
      assert.strictEqual(Buffer.from(w2.lines[0]!, "base64").toString(), "Password:")
      assert.strictEqual(show(yield* q.command(b64(PASSWORD))), "235 2.7.0")
    }))

  it.live("* cancels with 501; bad base64 is 501 5.5.2; an unknown mechanism 504 5.5.4; none of them counts as a failure", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net, { maxAuthFailures: 1 })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      assert.strictEqual(show(yield* p.command("AUTH LOGIN")), "334")
      assert.strictEqual(show(yield* p.command("*")), "501 5.0.0")
      assert.strictEqual(show(yield* p.command("AUTH PLAIN !!!!")), "501 5.5.2")
      assert.strictEqual(show(yield* p.command("AUTH PLAIN")), "334")
      assert.strictEqual(show(yield* p.command("not base64 at all")), "501 5.5.2")
      assert.strictEqual(show(yield* p.command("AUTH PLAIN =")), "501 5.5.2") // an empty PLAIN message is malformed
      assert.strictEqual(show(yield* p.command("AUTH CRAM-MD5")), "504 5.5.4")
      assert.strictEqual(show(yield* p.command("AUTH X-UNHEARD-OF")), "504 5.5.4")
      // Still authenticating fine: none of the above was a failed attempt.
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "235 2.7.0")
    }))

  it.live("wrong credentials: 535 5.7.8; the third failure is followed by 421 4.7.0 and close", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(net)
      const p = yield* s.open()
      yield* p.command("EHLO c")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", "wrong")}`)), "535 5.7.8")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("mallory", PASSWORD)}`)), "535 5.7.8")
      yield* p.write(`AUTH PLAIN ${plain("alice", "wrong again")}\r\n`)
      assert.strictEqual(show(yield* p.reply), "535 5.7.8")
      assert.strictEqual(show(yield* p.reply), "421 4.7.0")
      assert.isTrue(yield* p.closed)
      assert.strictEqual(rec.sessions[0]!.authenticatedAs(), undefined)
    }))

  it.live("AUTH needs EHLO first and no transaction in progress; a session without mechanisms refuses it", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net)
      const p = yield* s.open()
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "503 5.5.1")
      yield* p.command("HELO c")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "503 5.5.1")
      yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "503 5.5.1")

      const { layer } = makeBackend()
      const none = yield* start({ net, backend: layer, allowInsecureAuth: true })
      const q = yield* none.open()
      assert.isFalse((yield* q.command("EHLO c")).lines.some((l) => l.startsWith("AUTH")))
      assert.strictEqual(show(yield* q.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "502 5.5.1")
    }))

  it.live("requireAuth: MAIL gets 530 5.7.0 until AUTH succeeded", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net, { requireAuth: true })
      const p = yield* s.open()
      assert.deepStrictEqual(
        yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>", `AUTH PLAIN ${plain("alice", PASSWORD)}`, "MAIL FROM:<a@example.com>"),
        ["250", "530 5.7.0", "235 2.7.0", "250 2.1.0"]
      )
    }))

  it.live("requireAuth with a session that offers no mechanism: MAIL is still refused", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net, backend: layer, requireAuth: true })
      const p = yield* s.open()
      assert.deepStrictEqual(yield* dialog(p, "EHLO c", "MAIL FROM:<a@example.com>"), ["250", "530 5.7.0"])
      assert.notInclude(rec.events, "mail:a@example.com")
    }))

  it.live("SASL lines may be longer than a command line (up to 12288 bytes)", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net)
      const p = yield* s.open()
      yield* p.command("EHLO c")
      const long = plain("alice", PASSWORD + "x".repeat(3000)) // ~4 KiB of base64, over the 2000-byte limit
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${long}`)), "535 5.7.8")
      assert.strictEqual(show(yield* p.command("AUTH PLAIN")), "334")
      assert.strictEqual(show(yield* p.command(long)), "535 5.7.8")
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
    }))

  it.live("STARTTLS forgets a plaintext AUTH: the client authenticates again", () =>
    Effect.gen(function*() {
      const { rec, s } = yield* server(net, { tls })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "235 2.7.0")
      assert.strictEqual(show(yield* p.command("STARTTLS")), "220 2.0.0")
      yield* p.startTls({ ca: certs.ca })
      assert.include((yield* p.command("EHLO c")).lines, "AUTH PLAIN LOGIN")
      assert.strictEqual(rec.sessions[0]!.authenticatedAs(), undefined)
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "235 2.7.0")
    }))

  it.live("no password, no credentials in base64, and no body reach the logs", () =>
    Effect.gen(function*() {
      const { s } = yield* server(net)
      const p = yield* s.open()
      yield* p.command("EHLO c")
      yield* p.command(`AUTH PLAIN ${plain("alice", "wrong-" + PASSWORD)}`)
      yield* p.command("AUTH LOGIN")
      yield* p.command(b64("alice"))
      yield* p.command(b64("guess-" + PASSWORD))
      yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)
      yield* dialog(p, "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.com>", "DATA", "TOP-SECRET-CONTENT\r\n.", "QUIT")
      yield* p.closed
      yield* s.stop
      assert.isAbove(s.logs.length, 0)
      const text = JSON.stringify(s.logs)
      for (const secret of [PASSWORD, b64(PASSWORD), plain("alice", PASSWORD), b64("guess-" + PASSWORD), "TOP-SECRET-CONTENT"]) {
        assert.notInclude(text, secret)
      }
    }))
})

describe("AUTH crypto", () => {
  it.live("runs on the Digest provided to the server (node:crypto's here, counted)", () =>
    Effect.gen(function*() {
      let digests = 0
      const counted = Layer.effect(
        Digest.Digest,
        Effect.map(Effect.service(Digest.Digest), (node) =>
          Digest.Digest.of({
            digest: (algorithm, data) => Effect.suspend(() => (digests++, node.digest(algorithm, data))),
            digestHex: node.digestHex
          }))
      ).pipe(Layer.provide(NodeCrypto.layerDigest))
      const { s } = yield* server("memory").pipe(Effect.provide(counted))
      const p = yield* s.open()
      yield* p.command("EHLO c")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", "wrong")}`)), "535 5.7.8")
      assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain("alice", PASSWORD)}`)), "235 2.7.0")
      assert.strictEqual(digests, 4) // passwordVerifier: SHA-256 of both passwords, per attempt
    }))
})
