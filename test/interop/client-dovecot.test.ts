/**
 * effect-smtp's client in LMTP mode delivering into Dovecot's LMTP server: the messages
 * land in the users' Maildirs, and Dovecot's per-recipient verdicts come back per recipient.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import * as Dovecot from "./support/dovecot.ts"
import * as Files from "./support/files.ts"

/**
 * One Dovecot for the whole file (it takes a second to stop): each test delivers to
 * mailboxes of its own; "full" never accepts anything.
 */
class Lmtp extends Context.Service<Lmtp, Dovecot.Dovecot>()("test/Lmtp") {
  static readonly layer = Layer.effect(
    Lmtp,
    Effect.flatMap(Files.scratch, (files) =>
      Dovecot.start(files, [
        ...["bob", "carol", "dave", "erin", "frank"].map((name) => ({ name })),
        { name: "full", overQuota: true }
      ]))
  )
}

const message = "From: client@example.org\r\nTo: bob@example.net\r\nSubject: via LMTP\r\n" +
  "Message-ID: <lmtp-1@example.org>\r\n\r\n.leading dot\r\n..two dots\r\nGrüße ✓\r\n"

/**
 * A delivered Maildir file: Dovecot's Return-Path (the envelope sender), Delivered-To (when
 * the transaction had one recipient) and Received (our LHLO name) headers, then the message,
 * stored with LF line endings.
 */
const assertDelivered = (file: string | undefined, from: string) => {
  assert.isDefined(file)
  assert.match(file!, new RegExp(`^Return-Path: <${from}>\n(?:Delivered-To: \\S+\n)?Received: from client\\.test\\b[^]*? with LMTP\\b`))
  assert.isTrue(file!.endsWith(message.replaceAll("\r\n", "\n")), file)
}

// Real clock (the clients' and peers' deadlines are real), real network.
layer(Layer.merge(Lmtp.layer, NodeTransport.layer), { excludeTestServices: true })("effect-smtp client (LMTP) → Dovecot", (it) => {
  it.effect("sendMail: delivered to two mailboxes, refused for an over-quota one after the message", () =>
    Effect.gen(function*() {
      const dovecot = yield* Lmtp
      const result = yield* SmtpClient.sendMail({
        path: dovecot.socket,
        protocol: "lmtp",
        localName: "client.test",
        from: "client@example.org",
        to: ["bob@example.net", "full@example.net", "carol@example.net"],
        body: message
      })
      assert.deepStrictEqual(result.accepted.map((a) => [a.recipient, a.reply.code]), [
        ["bob@example.net", 250],
        ["carol@example.net", 250]
      ])
      assert.deepStrictEqual(
        result.rejected.map((r) => [r.recipient, r.error.code, r.error.resolvedEnhancedCode]),
        [["full@example.net", 552, [5, 2, 2]]]
      )
      assertDelivered(dovecot.inbox("bob")[0], "client@example.org")
      assertDelivered(dovecot.inbox("carol")[0], "client@example.org")
      assert.strictEqual(dovecot.inbox("bob").length, 1)
      assert.deepStrictEqual(dovecot.inbox("full"), [])
    }))

  it.effect("an unknown user is refused at RCPT (550 5.1.1); the others still get the message", () =>
    Effect.gen(function*() {
      const dovecot = yield* Lmtp
      const result = yield* SmtpClient.sendMail({
        path: dovecot.socket,
        protocol: "lmtp",
        localName: "client.test",
        from: "client@example.org",
        to: ["nobody@example.net", "dave@example.net"],
        body: message
      })
      assert.deepStrictEqual(result.accepted.map((a) => a.recipient), ["dave@example.net"])
      assert.deepStrictEqual(result.rejected.map((r) => [r.recipient, r.error.code]), [["nobody@example.net", 550]])
      assert.strictEqual(dovecot.inbox("dave").length, 1)
      assertDelivered(dovecot.inbox("dave")[0], "client@example.org")
    }))

  it.effect("step by step, BDAT (Dovecot offers CHUNKING): one status per recipient, in order", () =>
    Effect.gen(function*() {
      const dovecot = yield* Lmtp
      const client = yield* SmtpClient.connect({ path: dovecot.socket, protocol: "lmtp", localName: "client.test" })
      assert.strictEqual(client.extension("CHUNKING"), "")
      yield* client.mail("client@example.org")
      for (const to of ["full@example.net", "erin@example.net", "frank@example.net"]) yield* client.rcpt(to)
      // Small chunks: several BDAT commands before the last.
      const statuses = yield* client.lmtpData(message, { chunking: true, chunkSize: 16 })
      assert.deepStrictEqual(statuses.map((s) => [s.recipient, s.reply.code, s.error?.code]), [
        ["full@example.net", 552, 552],
        ["erin@example.net", 250, undefined],
        ["frank@example.net", 250, undefined]
      ])
      // The connection is still usable: a second transaction over DATA.
      yield* client.mail(null)
      yield* client.rcpt("erin@example.net")
      const second = yield* client.lmtpData(message)
      assert.deepStrictEqual(second.map((s) => s.reply.code), [250])
      yield* client.quit
      const inbox = dovecot.inbox("erin")
      assert.strictEqual(inbox.length, 2)
      assert.deepStrictEqual(inbox.map((m) => m.split("\n")[0]).sort(), ["Return-Path: <>", "Return-Path: <client@example.org>"])
      for (const m of inbox) assertDelivered(m, m.startsWith("Return-Path: <>") ? "" : "client@example.org")
      assertDelivered(dovecot.inbox("frank")[0], "client@example.org")
    }))

  it.effect("every recipient over quota: RecipientsRefused, not temporary", () =>
    Effect.gen(function*() {
      const dovecot = yield* Lmtp
      const sent = yield* Effect.result(SmtpClient.sendMail({
        path: dovecot.socket,
        protocol: "lmtp",
        from: "client@example.org",
        to: "full@example.net",
        body: message
      }))
      assert.isTrue(Result.isFailure(sent))
      const error = Result.isFailure(sent) ? sent.failure : undefined
      assert.instanceOf(error, SmtpClient.RecipientsRefused)
      assert.deepStrictEqual(
        error instanceof SmtpClient.RecipientsRefused ? error.rejected.map((r) => [r.recipient, r.error.code]) : [],
        [["full@example.net", 552]]
      )
      assert.isFalse(SmtpClient.isTemporary(error))
      assert.deepStrictEqual(dovecot.inbox("full"), [])
    }))
})
