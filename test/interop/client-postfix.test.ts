/**
 * effect-smtp's client sending into a real Postfix smtpd: STARTTLS required by Postfix
 * (`smtpd_tls_security_level = encrypt`), AUTH through Dovecot's SASL service, recipients
 * checked against a virtual mailbox table at RCPT, `message_size_limit`, BDAT (Postfix's
 * server speaks CHUNKING). Accepted mail is read back from the Maildir Postfix's virtual(8)
 * delivered it to.
 *
 * Postfix's smtpd listens on a Unix socket in its queue directory (no port to pick; Postfix
 * treats such a client as localhost). One Postfix and one Dovecot for the whole file.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as Sasl from "../../src/Sasl.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import { testCerts } from "../support/certs.ts"
import * as Dovecot from "./support/dovecot.ts"
import * as Files from "./support/files.ts"
import * as Postfix from "./support/postfix.ts"

const sizeLimit = 100_000
const users = { alice: "correct horse" }

interface Smtpd {
  readonly postfix: Postfix.Postfix
  /** Postfix's smtpd. */
  readonly socket: string
  readonly ca: string
  /** The messages delivered to a virtual mailbox (Maildir `new/`), in no particular order. */
  readonly inbox: (user: string) => ReadonlyArray<string>
}

class Peer extends Context.Service<Peer, Smtpd>()("test/PostfixSmtpd") {
  static readonly layer = Layer.effect(
    Peer,
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const auth = yield* Dovecot.startAuth(files, users)
      const certs = testCerts()
      const mail = files.path("vmail")
      fs.mkdirSync(mail)
      fs.chownSync(mail, 65534, 65534)
      const postfix = yield* Postfix.start(files, {
        main: {
          smtpd_tls_security_level: "encrypt",
          smtpd_tls_cert_file: files.write("server.crt", certs.server.cert),
          smtpd_tls_key_file: files.write("server.key", certs.server.key, 0o600),
          smtpd_tls_auth_only: "yes",
          smtpd_sasl_auth_enable: "yes",
          smtpd_sasl_type: "dovecot",
          smtpd_sasl_path: auth.socket,
          smtpd_relay_restrictions: "permit_sasl_authenticated, reject",
          message_size_limit: String(sizeLimit),
          smtpd_error_sleep_time: "0s", // no pause after each refusal
          virtual_mailbox_domains: "example.net",
          virtual_mailbox_maps: `texthash:${files.path("postfix")}/vmailbox`,
          virtual_mailbox_base: mail,
          virtual_uid_maps: "static:65534",
          virtual_gid_maps: "static:65534"
        },
        // A Unix socket in $queue_directory/public.
        services: ["smtpd unix n - n - - smtpd"],
        tables: { vmailbox: ["bob", "carol", "dave", "erin"].map((u) => [`${u}@example.net`, `${u}/`] as const) }
      })
      return {
        postfix,
        socket: `${postfix.queueDir}/public/smtpd`,
        ca: certs.ca,
        inbox: (user) => {
          const at = `${mail}/${user}/new`
          return fs.existsSync(at) ? fs.readdirSync(at).map((f) => fs.readFileSync(`${at}/${f}`, "utf8")) : []
        }
      }
    })
  )
}

const password = (username: string, secret: string) => ({ _tag: "Password" as const, username, password: Redacted.make(secret) })

const connectOptions = (smtpd: Smtpd, extra: Partial<SmtpClient.ConnectOptions> = {}): SmtpClient.ConnectOptions => ({
  path: smtpd.socket,
  security: "starttls",
  tls: { ca: smtpd.ca, servername: "localhost" },
  localName: "client.test",
  auth: password("alice", users.alice),
  ...extra
})

const message = (id: string, extra = "") =>
  `From: client@example.org\r\nTo: bob@example.net\r\nSubject: ${id}\r\nMessage-ID: <${id}@example.org>\r\n` +
  `Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nGrüße ✓\r\n${extra}`

/** "250 2.0.0 Ok: queued as 4ABC" */
const queueIdOf = (reply: { readonly text: string }) => {
  const id = /queued as ([0-9A-F]+)/.exec(reply.text)?.[1]
  assert.isDefined(id, reply.text)
  return id!
}

/**
 * A file virtual(8) delivered: its Return-Path, X-Original-To, Delivered-To and Received headers (ESMTPSA:
 * STARTTLS and AUTH), then exactly the message sent, stored with LF line endings.
 */
const assertDelivered = (file: string | undefined, sent: string, queueId: string, rcpt: string) => {
  assert.isDefined(file)
  const header = new RegExp(
    `^Return-Path: <client@example\\.org>\\nX-Original-To: ${rcpt}\\nDelivered-To: ${rcpt}\\nReceived: from client\\.test \\(localhost \\[127\\.0\\.0\\.1\\]\\)\\n` +
      `\\tby postfix\\.test \\(Postfix\\) with ESMTPSA id ${queueId}\\n(?:\\tfor <[^>]+>; |\\t)[^\\n]+\\n`
  ).exec(file!)
  assert.isNotNull(header, file!.slice(0, 400))
  assert.isTrue(file!.slice(header![0].length) === sent.replaceAll("\r\n", "\n"), "delivered byte for byte")
}

/** The session statistics smtpd logs at disconnect, e.g. "ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 bdat=3 quit=1". */
const sessionStats = (postfix: Postfix.Postfix, queueId: string) =>
  postfix.logged((log) => {
    const lines = log.split("\n")
    const pid = new RegExp(`postfix/smtpd\\[(\\d+)\\]: ${queueId}: client=`).exec(log)?.[1]
    if (pid === undefined) return undefined
    const at = lines.findIndex((l) => l.includes(`postfix/smtpd[${pid}]: ${queueId}: client=`))
    return lines.slice(at).find((l) => l.includes(`postfix/smtpd[${pid}]: disconnect from `))?.replace(/^.* disconnect from \S+ /, "")
  })

const delivered = (postfix: Postfix.Postfix, queueId: string, rcpt: string) =>
  Effect.map(postfix.delivery(queueId, rcpt), (d) => {
    assert.deepStrictEqual([d.relay, d.status], ["virtual", "sent"], d.text)
  })

const failureOf = <A, E>(r: Result.Result<A, E>): E | undefined => Result.isFailure(r) ? r.failure : undefined

// Real clock (the clients' and peers' deadlines are real), real network.
layer(Layer.merge(Peer.layer, NodeTransport.layer), { excludeTestServices: true, timeout: "60 seconds" })("effect-smtp client → Postfix smtpd", (it) => {
  it.effect("STARTTLS, AUTH with SCRAM-SHA-256 through Dovecot, DATA: delivered byte for byte", () =>
    Effect.gen(function*() {
      const smtpd = yield* Peer
      const sent = message("data-1")
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* SmtpClient.connect(connectOptions(smtpd))
        assert.strictEqual(client.tls()?.authorized, true)
        assert.deepStrictEqual([...client.authMechanisms()].sort(), ["CRAM-MD5", "LOGIN", "PLAIN", "SCRAM-SHA-256"])
        assert.strictEqual(client.authenticatedWith(), "SCRAM-SHA-256")
        assert.strictEqual(client.maxMessageSize(), sizeLimit)
        return yield* client.send({ from: "client@example.org", to: "bob@example.net", body: sent, transfer: "data" })
      }))
      assert.deepStrictEqual(result.accepted.map((a) => [a.recipient, a.reply.code]), [["bob@example.net", 250]])
      const queueId = queueIdOf(result.reply)
      yield* delivered(smtpd.postfix, queueId, "bob@example.net")
      assertDelivered(smtpd.inbox("bob").find((m) => m.includes("<data-1@example.org>")), sent, queueId, "bob@example.net")
      assert.match(yield* sessionStats(smtpd.postfix, queueId), /^ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8$/)
    }))

  it.effect("BDAT in small chunks, AUTH PLAIN: delivered byte for byte", () =>
    Effect.gen(function*() {
      const smtpd = yield* Peer
      const sent = message("bdat-1", "x".repeat(60).concat("\r\n").repeat(100))
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* SmtpClient.connect(connectOptions(smtpd, { auth: undefined }))
        assert.strictEqual(client.extension("CHUNKING"), "")
        yield* client.auth(Sasl.plain({ username: "alice", password: Redacted.make(users.alice) }))
        assert.strictEqual(client.authenticatedWith(), "PLAIN")
        return yield* client.send({ from: "client@example.org", to: "carol@example.net", body: sent, transfer: "bdat", chunkSize: 1000 })
      }))
      const queueId = queueIdOf(result.reply)
      yield* delivered(smtpd.postfix, queueId, "carol@example.net")
      assertDelivered(smtpd.inbox("carol")[0], sent, queueId, "carol@example.net")
      const chunks = Math.ceil(Buffer.byteLength(sent) / 1000)
      assert.match(yield* sessionStats(smtpd.postfix, queueId), new RegExp(`^ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 bdat=${chunks} quit=1 `))
    }))

  it.effect("an unknown recipient is refused at RCPT (550 5.1.1); the known one gets the message", () =>
    Effect.gen(function*() {
      const smtpd = yield* Peer
      const sent = message("rcpt-1")
      const result = yield* SmtpClient.sendMail({
        ...connectOptions(smtpd),
        from: "client@example.org",
        to: ["nobody@example.net", "dave@example.net"],
        body: sent
      })
      assert.deepStrictEqual(result.accepted.map((a) => a.recipient), ["dave@example.net"])
      assert.deepStrictEqual(
        result.rejected.map((r) => [r.recipient, r.error.code, r.error.resolvedEnhancedCode?.join(".")]),
        [["nobody@example.net", 550, "5.1.1"]]
      )
      assert.include(result.rejected[0]!.error.message, "User unknown in virtual mailbox table")
      const queueId = queueIdOf(result.reply)
      yield* delivered(smtpd.postfix, queueId, "dave@example.net")
      assertDelivered(smtpd.inbox("dave")[0], sent, queueId, "dave@example.net")

      // Nobody known: RecipientsRefused, permanent; nothing is queued.
      const none = failureOf(yield* Effect.result(SmtpClient.sendMail({
        ...connectOptions(smtpd),
        from: "client@example.org",
        to: ["nobody@example.net", "noone@example.net"],
        body: sent
      })))
      assert.instanceOf(none, SmtpClient.RecipientsRefused)
      assert.isFalse(SmtpClient.isTemporary(none))
    }))

  it.effect("the size limit: a declared SIZE over it is refused at MAIL, an undeclared one after the body (552 5.3.4)", () =>
    Effect.gen(function*() {
      const smtpd = yield* Peer
      const big = message("big-1", "y".repeat(70).concat("\r\n").repeat(Math.ceil(sizeLimit / 72) + 10))
      const declared = failureOf(yield* Effect.result(SmtpClient.sendMail({
        ...connectOptions(smtpd),
        from: "client@example.org",
        to: "erin@example.net",
        body: big
      })))
      assert.instanceOf(declared, SmtpError)
      assert.deepStrictEqual([declared.code, declared.resolvedEnhancedCode?.join(".")], [552, "5.3.4"])
      assert.include(declared.message, "Message size exceeds fixed limit")

      // A stream has no size to declare: Postfix counts, and refuses at the end of DATA.
      const streamed = failureOf(yield* Effect.result(SmtpClient.sendMail({
        ...connectOptions(smtpd),
        from: "client@example.org",
        to: "erin@example.net",
        body: Stream.make(new TextEncoder().encode(big))
      })))
      assert.instanceOf(streamed, SmtpError)
      assert.deepStrictEqual([streamed.code, streamed.resolvedEnhancedCode?.join(".")], [552, "5.3.4"])
      assert.deepStrictEqual(smtpd.inbox("erin"), [])
    }))

  it.effect("Postfix's policies come back typed: no STARTTLS (530), a wrong password (535), no AUTH (554)", () =>
    Effect.gen(function*() {
      const smtpd = yield* Peer
      const send = (extra: Partial<SmtpClient.ConnectOptions>) =>
        Effect.map(
          Effect.result(SmtpClient.sendMail({
            ...connectOptions(smtpd, extra),
            from: "client@example.org",
            to: "bob@example.net",
            body: message("policy-1")
          })),
          failureOf
        )
      const plaintext = yield* send({ security: "none", auth: undefined })
      assert.instanceOf(plaintext, SmtpError)
      assert.deepStrictEqual([plaintext.code, plaintext.resolvedEnhancedCode?.join(".")], [530, "5.7.0"])
      assert.include(plaintext.message, "Must issue a STARTTLS command first")

      const wrong = yield* send({ auth: password("alice", "battery staple") })
      assert.instanceOf(wrong, SmtpError)
      assert.deepStrictEqual([wrong.code, wrong.resolvedEnhancedCode?.join(".")], [535, "5.7.8"])

      const anonymous = yield* send({ auth: undefined })
      assert.instanceOf(anonymous, SmtpClient.RecipientsRefused)
      const refusal = anonymous instanceof SmtpClient.RecipientsRefused ? anonymous.rejected[0]?.error : undefined
      assert.deepStrictEqual([refusal?.code, refusal?.resolvedEnhancedCode?.join(".")], [554, "5.7.1"])
      assert.isFalse(smtpd.inbox("bob").some((m) => m.includes("<policy-1@example.org>")))
    }))
})
