/**
 * The Node libraries people would otherwise pick, both ways: nodemailer's SMTP transport
 * (pooled, STARTTLS required, AUTH) sending into effect-smtp's server, and effect-smtp's
 * client sending into nodemailer's smtp-server. Messages arrive byte for byte, envelopes
 * intact, and refusals come back as each side's typed errors.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import nodemailer, { type SendMailOptions, type Transporter } from "nodemailer"
import MailComposer from "nodemailer/lib/mail-composer"
import type SMTPPool from "nodemailer/lib/smtp-pool"
import { type SMTPServerDataStream, type SMTPServerSession, SMTPServer } from "smtp-server"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import { testCerts } from "../support/certs.ts"
import * as Files from "./support/files.ts"
import * as Server from "./support/server.ts"

const certs = testCerts()
const users = { alice: "correct horse" }
const noSuchUser = SmtpError.of(550, [5, 1, 1], "No such user here")

const raw = (n: number) =>
  `From: app@example.org\r\nTo: user${n}@example.net\r\nSubject: pooled ${n}\r\nMessage-ID: <pool-${n}@example.org>\r\n\r\n` +
  `.leading dot\r\n..two dots\r\n.\r\nGrüße ✓ ${n}\r\n`

/** An error nodemailer rejected with: its code (EENVELOPE, EAUTH…) and the server's reply. */
interface NodemailerError {
  readonly code?: string
  readonly responseCode?: number
  readonly response?: string
  readonly rejected?: ReadonlyArray<string>
}

const sendWith = (transport: Transporter<SMTPPool.SentMessageInfo>, mail: SendMailOptions) =>
  Effect.result(Effect.tryPromise({ try: () => transport.sendMail(mail), catch: (e) => e as NodemailerError }))

/** A pooled nodemailer transport to the server, closed with the scope. */
const pool = (port: number, options: Partial<SMTPPool.Options> = {}) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      nodemailer.createTransport({
        host: "127.0.0.1",
        port,
        secure: false,
        requireTLS: true,
        tls: { ca: certs.ca, servername: "localhost" },
        name: "nodemailer.test",
        auth: { user: "alice", pass: users.alice },
        pool: true,
        maxConnections: 2,
        maxMessages: 100,
        ...options
      })
    ),
    (t) => Effect.sync(() => t.close())
  )

describe("nodemailer → effect-smtp server", () => {
  it.live("a pool of 2 connections, STARTTLS and AUTH: 8 messages byte for byte, each with its envelope", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ listen: [Server.tcp()], behaviour: { users } })
      const transport = yield* pool(server.port())
      const infos = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, n) => n),
        (n) =>
          Effect.tryPromise(() =>
            transport.sendMail({ envelope: { from: "app@example.org", to: [`user${n}@example.net`] }, raw: raw(n) })
          ),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(infos.map((i) => i.accepted), infos.map((_, n) => [`user${n}@example.net`]))
      assert.isTrue(infos.every((i) => i.response.startsWith("250 2.0.0 ")))

      assert.strictEqual(server.received.length, 8)
      // Two connections, each carrying several messages.
      assert.strictEqual(server.sessions(), 2)
      assert.strictEqual(new Set(server.received.map((m) => m.connection)).size, 2)
      for (const m of server.received) {
        const n = Number(m.rcpts[0]!.to.slice(4, 5))
        assert.strictEqual(m.from, "app@example.org")
        assert.deepStrictEqual(m.rcpts.map((r) => r.to), [`user${n}@example.net`])
        assert.strictEqual(m.helo, "nodemailer.test")
        assert.isDefined(m.tls)
        assert.strictEqual(m.authenticatedAs, "alice")
        assert.strictEqual(Buffer.from(m.body).toString("utf8"), raw(n))
      }
    }))

  it.live("a message nodemailer composes (quoted-printable text, a base64 attachment) arrives as its composer builds it", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ listen: [Server.tcp()], behaviour: { users } })
      const transport = yield* pool(server.port(), { authMethod: "LOGIN" })
      const mail: SendMailOptions = {
        from: "App <app@example.org>",
        to: "user@example.net",
        subject: "Grüße ✓",
        text: `.leading dot\n..two dots\n.\nGrüße ✓ ${"a long line that quoted-printable breaks softly ".repeat(3)}\nlast line`,
        attachments: [{ filename: "data.bin", content: Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 256)) }],
        messageId: "<composed-1@example.org>",
        date: new Date("2025-12-01T10:00:00Z"),
        baseBoundary: "fixed" // MIME boundaries are random otherwise
      }
      yield* Effect.tryPromise(() => transport.sendMail(mail))
      assert.strictEqual(server.received.length, 1)
      // What the composer builds, with line endings made CRLF as nodemailer's transport does.
      const built = (yield* Effect.tryPromise(() => new MailComposer(mail).compile().build())).toString("latin1")
      assert.include(built, "Content-Transfer-Encoding: quoted-printable")
      assert.include(built, "Content-Transfer-Encoding: base64")
      assert.strictEqual(Buffer.from(server.received[0]!.body).toString("latin1"), built.replace(/\r?\n/g, "\r\n"))
      assert.deepStrictEqual(server.received[0]!.rcpts.map((r) => r.to), ["user@example.net"])
    }))

  it.live("refusals: one recipient refused (the other delivered), all refused (EENVELOPE), a wrong password (EAUTH)", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({
        listen: [Server.tcp()],
        behaviour: { users, rejectRcpt: (to) => to.startsWith("nobody@") ? noSuchUser : undefined }
      })
      const transport = yield* pool(server.port(), { maxConnections: 1 })
      const partial = yield* sendWith(transport, {
        envelope: { from: "app@example.org", to: ["nobody@example.net", "user0@example.net"] },
        raw: raw(0)
      })
      assert.isTrue(Result.isSuccess(partial))
      const info = Result.isSuccess(partial) ? partial.success : undefined
      assert.deepStrictEqual([info?.accepted, info?.rejected], [["user0@example.net"], ["nobody@example.net"]])
      assert.deepStrictEqual(server.received.map((m) => m.rcpts.map((r) => r.to)), [["user0@example.net"]])

      const none = yield* sendWith(transport, { envelope: { from: "app@example.org", to: ["nobody@example.net"] }, raw: raw(1) })
      const envelopeError = Result.isFailure(none) ? none.failure : undefined
      assert.deepStrictEqual(
        [envelopeError?.code, envelopeError?.responseCode, envelopeError?.rejected],
        ["EENVELOPE", 550, ["nobody@example.net"]]
      )
      assert.include(envelopeError?.response, "550 5.1.1 No such user here")

      const wrong = yield* pool(server.port(), { auth: { user: "alice", pass: "battery staple" } })
      const denied = yield* sendWith(wrong, { envelope: { from: "app@example.org", to: ["user1@example.net"] }, raw: raw(1) })
      const authError = Result.isFailure(denied) ? denied.failure : undefined
      assert.deepStrictEqual([authError?.code, authError?.responseCode], ["EAUTH", 535])
      assert.strictEqual(server.received.length, 1)
    }))
})

/** One message smtp-server handed to onData. */
interface Delivered {
  readonly session: SMTPServerSession
  readonly from: string | undefined
  readonly to: ReadonlyArray<string>
  readonly body: Buffer
}

/** nodemailer's smtp-server with STARTTLS, AUTH, SIZE and a recipient it refuses; closed with the scope. */
const smtpServer = Effect.acquireRelease(
  Effect.callback<{ readonly port: number; readonly delivered: Array<Delivered>; readonly server: SMTPServer }>((resume) => {
    const delivered: Array<Delivered> = []
    const server = new SMTPServer({
      name: "smtp-server.test",
      logger: false,
      key: certs.server.key,
      cert: certs.server.cert,
      authMethods: ["PLAIN", "LOGIN", "CRAM-MD5"],
      size: 50_000,
      disableReverseLookup: true,
      onAuth: (auth, _session, callback) => {
        const ok = auth.method === "CRAM-MD5"
          ? auth.validatePassword?.(users.alice) === true && auth.username === "alice"
          : auth.username === "alice" && auth.password === users.alice
        callback(ok ? null : Object.assign(new Error("Invalid username or password"), { responseCode: 535 }), ok ? { user: auth.username } : undefined)
      },
      onRcptTo: (address, _session, callback) =>
        callback(address.address.startsWith("nobody@") ? Object.assign(new Error("No such user"), { responseCode: 550 }) : null),
      onData: (stream: SMTPServerDataStream, session, callback) => {
        const chunks: Array<Buffer> = []
        stream.on("data", (c: Buffer) => chunks.push(c))
        stream.on("end", () => {
          delivered.push({
            session,
            from: session.envelope.mailFrom === false ? undefined : session.envelope.mailFrom.address,
            to: session.envelope.rcptTo.map((r) => r.address),
            body: Buffer.concat(chunks)
          })
          callback(null)
        })
      }
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.server.address()
      resume(Effect.succeed({ port: typeof address === "object" && address !== null ? address.port : 0, delivered, server }))
    })
  }),
  ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
)

const clientOptions = (port: number, extra: Partial<SmtpClient.ConnectOptions> = {}): SmtpClient.ConnectOptions => ({
  host: "127.0.0.1",
  port,
  tls: { ca: certs.ca, servername: "localhost" },
  localName: "client.test",
  auth: { _tag: "Password", username: "alice", password: Redacted.make(users.alice) },
  ...extra
})

describe("effect-smtp client → smtp-server", () => {
  it.live("STARTTLS (required), AUTH with the strongest mechanism offered, PIPELINING: byte for byte", () =>
    Effect.gen(function*() {
      const peer = yield* smtpServer
      // smtp-server keeps a lone leading dot, so ".." and "." lines are what shows stuffing.
      const body = Buffer.concat([Files.bigMessage(30_000), Buffer.from("..two dots\r\n.\r\nlast\r\n")])
      const sent = yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* SmtpClient.connect(clientOptions(peer.port))
        assert.strictEqual(client.authenticatedWith(), "CRAM-MD5")
        assert.strictEqual(client.extension("PIPELINING"), "")
        assert.strictEqual(client.maxMessageSize(), 50_000)
        return yield* client.send({ from: "client@example.org", to: ["a@example.net", "b@example.net"], body })
      }))
      assert.deepStrictEqual(sent.accepted.map((a) => a.recipient), ["a@example.net", "b@example.net"])
      assert.strictEqual(peer.delivered.length, 1)
      const d = peer.delivered[0]!
      assert.strictEqual(d.from, "client@example.org")
      assert.deepStrictEqual(d.to, ["a@example.net", "b@example.net"])
      assert.strictEqual(d.session.secure, true)
      assert.strictEqual(d.session.user, "alice")
      assert.strictEqual(d.session.hostNameAppearsAs, "client.test")
      assert.isTrue(Buffer.from(body).equals(d.body), "byte for byte")
    }).pipe(Effect.provide(NodeTransport.layer)))

  it.live("refusals come back typed: a recipient (550), a declared SIZE over the limit (552), a wrong password (535)", () =>
    Effect.gen(function*() {
      const peer = yield* smtpServer
      const message = "Subject: refusals\r\n\r\n.dot\r\n..two dots\r\n.\r\n"
      const partial = yield* SmtpClient.sendMail({
        ...clientOptions(peer.port),
        from: "client@example.org",
        to: ["nobody@example.net", "c@example.net"],
        body: message
      })
      assert.deepStrictEqual(partial.accepted.map((a) => a.recipient), ["c@example.net"])
      assert.deepStrictEqual(partial.rejected.map((r) => [r.recipient, r.error.code]), [["nobody@example.net", 550]])
      assert.isTrue(peer.delivered[0]!.body.equals(Buffer.from(message)))

      const tooBig = yield* Effect.result(SmtpClient.sendMail({
        ...clientOptions(peer.port),
        from: "client@example.org",
        to: "c@example.net",
        body: Files.bigMessage(60_000)
      }))
      const sizeError = Result.isFailure(tooBig) ? tooBig.failure : undefined
      assert.instanceOf(sizeError, SmtpError)
      assert.strictEqual(sizeError instanceof SmtpError ? sizeError.code : 0, 552)

      const wrong = yield* Effect.result(SmtpClient.sendMail({
        ...clientOptions(peer.port, { auth: { _tag: "Password", username: "alice", password: Redacted.make("nope") } }),
        from: "client@example.org",
        to: "c@example.net",
        body: message
      }))
      const authError = Result.isFailure(wrong) ? wrong.failure : undefined
      assert.instanceOf(authError, SmtpError)
      assert.strictEqual(authError instanceof SmtpError ? authError.code : 0, 535)
      assert.strictEqual(peer.delivered.length, 1)
    }).pipe(Effect.provide(NodeTransport.layer)))
})
