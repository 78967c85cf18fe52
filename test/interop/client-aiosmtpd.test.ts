/**
 * effect-smtp's client sending into Python's aiosmtpd (Debian's python3-aiosmtpd): STARTTLS
 * and AUTH both required by the server, 8BITMIME, SMTPUTF8 and SIZE. What its handler sees
 * is what was sent, byte for byte; its refusals come back as typed errors.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import { testCerts } from "../support/certs.ts"
import * as Aiosmtpd from "./support/aiosmtpd.ts"
import * as Files from "./support/files.ts"

const users = { alice: "correct horse" }
const size = 50_000

class Peer extends Context.Service<Peer, Aiosmtpd.Aiosmtpd>()("test/Aiosmtpd") {
  static readonly layer = Layer.effect(Peer, Effect.flatMap(Files.scratch, (files) => Aiosmtpd.start(files, { users, size })))
}

const options = (peer: Aiosmtpd.Aiosmtpd, extra: Partial<SmtpClient.ConnectOptions> = {}): SmtpClient.ConnectOptions => ({
  path: peer.socket,
  security: "starttls",
  tls: { ca: testCerts().ca, servername: "localhost" },
  localName: "client.test",
  auth: { _tag: "Password", username: "alice", password: Redacted.make(users.alice) },
  ...extra
})

const message = (id: string) =>
  `From: client@example.org\r\nTo: bob@example.net\r\nSubject: ${id}\r\nMessage-ID: <${id}@example.org>\r\n\r\n` +
  `.leading dot\r\n..two dots\r\n.\r\nGrüße ✓\r\n`

const failureOf = <A, E>(r: Result.Result<A, E>): E | undefined => Result.isFailure(r) ? r.failure : undefined

const received = (peer: Aiosmtpd.Aiosmtpd, id: string) =>
  peer.messages().filter((m) => m.content.toString("utf8").includes(`<${id}@example.org>`))

layer(Layer.merge(Peer.layer, NodeTransport.layer), { excludeTestServices: true })("effect-smtp client → aiosmtpd", (it) => {
  it.effect("STARTTLS and AUTH (both required), 8BITMIME: the handler gets the exact bytes and envelope", () =>
    Effect.gen(function*() {
      const peer = yield* Peer
      const body = message("aio-1")
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* SmtpClient.connect(options(peer))
        assert.strictEqual(client.tls()?.authorized, true)
        assert.strictEqual(client.maxMessageSize(), size)
        assert.isDefined(client.authenticatedWith())
        return yield* client.send({ from: "client@example.org", to: ["bob@example.net", "carol@example.net"], body })
      }))
      assert.deepStrictEqual(result.accepted.map((a) => a.recipient), ["bob@example.net", "carol@example.net"])
      assert.strictEqual(result.reply.text, "Message accepted for delivery")
      const [m, ...more] = received(peer, "aio-1")
      assert.deepStrictEqual(more, [])
      assert.strictEqual(m!.helo, "client.test")
      assert.isTrue(m!.tls)
      assert.strictEqual(m!.authenticatedAs, "alice")
      assert.strictEqual(m!.from, "client@example.org")
      assert.deepStrictEqual(m!.to, ["bob@example.net", "carol@example.net"])
      assert.sameMembers([...m!.mailOptions], [`SIZE=${Buffer.byteLength(body)}`, "BODY=8BITMIME"])
      assert.isTrue(m!.content.equals(Buffer.from(body)), "byte for byte")
    }))

  it.effect("SMTPUTF8: an internationalized address goes out with SMTPUTF8 and arrives as UTF-8", () =>
    Effect.gen(function*() {
      const peer = yield* Peer
      const body = message("aio-utf8")
      yield* SmtpClient.sendMail({ ...options(peer), from: "ünïcode@example.org", to: "用户@例子.example", body })
      const [m] = received(peer, "aio-utf8")
      assert.strictEqual(m!.from, "ünïcode@example.org")
      assert.deepStrictEqual(m!.to, ["用户@例子.example"])
      assert.include(m!.mailOptions, "SMTPUTF8")
      assert.isTrue(m!.content.equals(Buffer.from(body)))
    }))

  it.effect("refusals come back typed: a recipient (550 5.1.1), SIZE over the limit (552), a wrong password (535), no STARTTLS (530)", () =>
    Effect.gen(function*() {
      const peer = yield* Peer
      const partial = yield* SmtpClient.sendMail({
        ...options(peer),
        from: "client@example.org",
        to: ["nobody@example.net", "dave@example.net"],
        body: message("aio-partial")
      })
      assert.deepStrictEqual(partial.accepted.map((a) => a.recipient), ["dave@example.net"])
      assert.deepStrictEqual(
        partial.rejected.map((r) => [r.recipient, r.error.code, r.error.resolvedEnhancedCode?.join(".")]),
        [["nobody@example.net", 550, "5.1.1"]]
      )
      assert.deepStrictEqual(received(peer, "aio-partial").map((m) => m.to), [["dave@example.net"]])

      const send = (extra: Partial<SmtpClient.ConnectOptions>, body: string) =>
        Effect.map(Effect.result(SmtpClient.sendMail({ ...options(peer, extra), from: "client@example.org", to: "dave@example.net", body })), failureOf)
      const big = yield* send({}, message("aio-big") + "z".repeat(70).concat("\r\n").repeat(size / 70))
      assert.instanceOf(big, SmtpError)
      assert.strictEqual(big instanceof SmtpError ? big.code : 0, 552)

      const wrong = yield* send({ auth: { _tag: "Password", username: "alice", password: Redacted.make("nope") } }, message("aio-wrong"))
      assert.instanceOf(wrong, SmtpError)
      assert.strictEqual(wrong instanceof SmtpError ? wrong.code : 0, 535)

      const plaintext = yield* send({ security: "none", auth: undefined }, message("aio-plain"))
      assert.instanceOf(plaintext, SmtpError)
      assert.strictEqual(plaintext instanceof SmtpError ? plaintext.code : 0, 530)
      assert.deepStrictEqual(["aio-big", "aio-wrong", "aio-plain"].flatMap((id) => received(peer, id)), [])
    }))
})
