/**
 * Python's smtplib (SMTP, SMTP_SSL and LMTP classes) against effect-smtp's server.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { bareLineEndingError } from "../../src/internal/codec/LineReader.ts"
import { dataTooLarge, SmtpError } from "../../src/SmtpError.ts"
import * as Files from "./support/files.ts"
import { python } from "./support/python.ts"
import * as Server from "./support/server.ts"

const users = { alice: "correct horse" }
const behaviour: Server.Behaviour = {
  users,
  rejectRcpt: (to) => to.startsWith("nobody@") ? SmtpError.of(550, [5, 1, 1], "No such user here") : undefined
}
const startServer = (options: Partial<Parameters<typeof Server.start>[0]> = {}) =>
  Server.start({ listen: [Server.tcp(), Server.tcp(true)], behaviour, ...options })

describe("python smtplib → effect-smtp server", () => {
  it.live("sendmail to three recipients, one refused: the refusal comes back, the others get the message", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const message = "From: py@example.org\r\nSubject: smtplib\r\n\r\n.a dot\r\nline two\r\n"
      const result = yield* python(
        `
with smtplib.SMTP("127.0.0.1", args["port"], local_hostname="client.test", timeout=15) as s:
    refused = s.sendmail("py@example.org", args["rcpts"], args["message"].encode())
    done({"refused": {k: [c, t.decode()] for k, (c, t) in refused.items()}, "size": s.has_extn("size")})
`,
        { port: server.port(), rcpts: ["a@example.net", "nobody@example.net", "b@example.net"], message }
      )
      assert.deepStrictEqual(result, {
        refused: { "nobody@example.net": [550, "5.1.1 No such user here"] },
        size: true
      })
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.strictEqual(m.helo, "client.test")
      assert.strictEqual(m.from, "py@example.org")
      assert.deepStrictEqual(m.rcpts.map((r) => r.to), ["a@example.net", "b@example.net"])
      // smtplib declares the size because the server advertises SIZE.
      assert.strictEqual(m.mailOptions.size, message.length)
      assert.strictEqual(Files.latin1(m.body), message)
    }))

  it.live("BODY=8BITMIME: the parameter is parsed and 8-bit bytes arrive unchanged", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const message = Buffer.from("Subject: 8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln ✓\r\n")
      yield* python(
        `
with smtplib.SMTP("127.0.0.1", args["port"], timeout=15) as s:
    done(s.sendmail("py@example.org", ["a@example.net"], bytes.fromhex(args["hex"]), mail_options=["BODY=8BITMIME"]))
`,
        { port: server.port(), hex: message.toString("hex") }
      )
      assert.strictEqual(server.received.length, 1)
      assert.strictEqual(server.received[0]!.mailOptions.body, "8BITMIME")
      assert.deepStrictEqual(Buffer.from(server.received[0]!.body), message)
    }))

  const loginCases = [
    // login() picks the first of CRAM-MD5, PLAIN, LOGIN the server offers.
    { name: "login() (smtplib chooses CRAM-MD5)", code: `s.login("alice", args["password"])` },
    { name: "AUTH PLAIN with an initial response", code: `s.auth("PLAIN", s.auth_plain)` },
    // smtplib sends the username as an initial response to AUTH LOGIN: a common deviation.
    { name: "AUTH LOGIN with the username as initial response", code: `s.auth("LOGIN", s.auth_login)` },
    { name: "AUTH LOGIN without initial response", code: `s.auth("LOGIN", s.auth_login, initial_response_ok=False)` }
  ]
  for (const c of loginCases) {
    it.live(`STARTTLS trusting the test CA, then ${c.name}`, () =>
      Effect.gen(function*() {
        const server = yield* startServer()
        const files = yield* Files.scratch
        const result = yield* python(
          `
with smtplib.SMTP("127.0.0.1", args["port"], timeout=15) as s:
    s.starttls(context=ssl.create_default_context(cafile=args["ca"]))
    s.ehlo()
    s.user, s.password = "alice", args["password"]
    code, _ = ${c.code}
    s.sendmail("alice@example.org", ["a@example.net"], b"Subject: after auth\\r\\n\\r\\nhi\\r\\n")
    done({"code": code, "version": s.sock.version(), "auth": s.esmtp_features["auth"]})
`,
          { port: server.port(), ca: files.caFile(), password: users.alice }
        )
        assert.deepStrictEqual(result, {
          code: 235,
          version: server.received[0]?.tls?.protocol,
          auth: " SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN"
        })
        assert.strictEqual(server.received.length, 1)
        assert.strictEqual(server.received[0]!.authenticatedAs, "alice")
      }))
  }

  it.live("STARTTLS starts the session over: an AUTH and a MAIL from the plaintext part are forgotten", () =>
    Effect.gen(function*() {
      const server = yield* startServer({ allowInsecureAuth: true })
      const files = yield* Files.scratch
      const result = yield* python(
        `
with smtplib.SMTP("127.0.0.1", args["port"], local_hostname="client.test", timeout=15) as s:
    s.login("alice", args["password"])
    plain_mail = s.mail("py@example.org")[0]
    s.starttls(context=ssl.create_default_context(cafile=args["ca"]))
    s.ehlo()
    rcpt_without_mail = s.rcpt("a@example.net")
    s.login("alice", args["password"])
    s.sendmail("alice@example.org", ["a@example.net"], b"Subject: after STARTTLS\\r\\n\\r\\nhi\\r\\n")
    done({"plainMail": plain_mail, "rcpt": [rcpt_without_mail[0], rcpt_without_mail[1].decode()]})
`,
        { port: server.port(), ca: files.caFile(), password: users.alice }
      )
      // The RCPT has no transaction to join, and a second login() is not "503 Already authenticated".
      assert.deepStrictEqual(result, { plainMail: 250, rcpt: [503, "5.5.1 Send MAIL FROM first"] })
      assert.strictEqual(server.received.length, 1)
      assert.strictEqual(server.received[0]!.authenticatedAs, "alice")
      assert.isDefined(server.received[0]!.tls)
    }))

  it.live("a wrong password: SMTPAuthenticationError 535 5.7.8; login() tries 3 mechanisms, the 3rd failure ends the connection", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const result = yield* python(
        `
s = smtplib.SMTP("127.0.0.1", args["port"], timeout=15)
s.starttls(context=ssl.create_default_context(cafile=args["ca"]))
try:
    s.login("alice", "wrong")
    login = "logged in"
except smtplib.SMTPAuthenticationError as e:
    login = reply(e)
# login() tried CRAM-MD5, PLAIN and LOGIN in turn: three failures, the server's limit.
after = s.noop()
done({"login": login, "after": [after[0], after[1].decode()]})
`,
        { port: server.port(), ca: files.caFile() }
      )
      const r = result as { login: { error: string; code: number; text: string }; after: [number, string] }
      assert.deepStrictEqual([r.login.error, r.login.code, r.after[0]], ["SMTPAuthenticationError", 535, 421])
      assert.match(r.login.text, /^5\.7\.8 /)
      assert.match(r.after[1], /^4\.7\.0 .*failed auth/)
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("SMTP_SSL (implicit TLS) with the certificate verified", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const files = yield* Files.scratch
      const result = yield* python(
        `
context = ssl.create_default_context(cafile=args["ca"])
with smtplib.SMTP_SSL("localhost", args["port"], context=context, timeout=15) as s:
    s.login("alice", args["password"])
    s.sendmail("alice@example.org", ["a@example.net"], b"Subject: ssl\\r\\n\\r\\nover TLS\\r\\n")
    done({"starttls": s.has_extn("starttls")})
`,
        { port: server.port(1), ca: files.caFile(), password: users.alice }
      )
      assert.deepStrictEqual(result, { starttls: false })
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.isDefined(m.tls)
      assert.strictEqual(m.tls?.servername, "localhost")
      assert.strictEqual(m.authenticatedAs, "alice")
      assert.strictEqual(Files.latin1(m.body), "Subject: ssl\r\n\r\nover TLS\r\n")
    }))

  it.live("a declared SIZE over the limit is refused at MAIL (552 5.3.4) before any body is sent", () =>
    Effect.gen(function*() {
      const server = yield* startServer({ maxMessageBytes: 64 * 1024 })
      const result = yield* python(
        `
with smtplib.SMTP("127.0.0.1", args["port"], timeout=15) as s:
    try:
        s.sendmail("py@example.org", ["a@example.net"], b"Subject: big\\r\\n\\r\\n" + b"x" * 100000 + b"\\r\\n")
        done("sent")
    except smtplib.SMTPSenderRefused as e:
        done(reply(e) | {"max": s.esmtp_features["size"], "noop": s.noop()[0]})
`,
        { port: server.port() }
      )
      assert.deepStrictEqual(result, {
        error: "SMTPSenderRefused",
        code: 552,
        text: `5.3.4 ${dataTooLarge.message}`,
        max: "65536",
        noop: 250
      })
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("bytes with bare LF line endings are refused after the body (550 5.5.2): no smuggling", () =>
    Effect.gen(function*() {
      const server = yield* startServer()
      const result = yield* python(
        `
with smtplib.SMTP("127.0.0.1", args["port"], timeout=15) as s:
    try:
        # smtplib sends bytes untouched: these lines end in a bare LF.
        s.sendmail("py@example.org", ["a@example.net"], b"Subject: bare\\n\\nline\\n.\\nMAIL FROM:<x@y>\\n")
        done("sent")
    except smtplib.SMTPDataError as e:
        done(reply(e) | {"noop": s.noop()[0]})
`,
        { port: server.port() }
      )
      assert.deepStrictEqual(result, {
        error: "SMTPDataError",
        code: 550,
        text: `5.5.2 ${bareLineEndingError.message}`,
        noop: 250
      })
      assert.strictEqual(server.received.length, 0)
    }))

  it.live("LMTP over a Unix socket: one reply per recipient after the body, the failed one in its place", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const socket = files.path("lmtp.sock")
      const full = SmtpError.of(452, [4, 2, 2], "Mailbox full")
      const server = yield* Server.start({
        listen: [Server.unix(socket)],
        protocol: "lmtp",
        behaviour: { deliverTo: (to) => to.startsWith("full@") ? full : undefined }
      })
      // smtplib's LMTP.sendmail reads only the first reply after the body (a known smtplib
      // limitation), so the conversation is driven by hand: data() returns the first
      // recipient's reply, getreply() each further one.
      const result = yield* python(
        `
s = smtplib.LMTP(args["socket"], local_hostname="client.test")
s.ehlo()  # sends LHLO
s.mail("py@example.org")
for r in args["rcpts"]:
    s.rcpt(r)
replies = [s.data(b"Subject: lmtp\\r\\n\\r\\nhello\\r\\n")]
for _ in args["rcpts"][1:]:
    replies.append(s.getreply())
replies.append(s.noop())
s.quit()
done([[code, text.decode()] for code, text in replies])
`,
        { socket, rcpts: ["a@example.net", "full@example.net", "b@example.net"] }
      )
      const replies = result as ReadonlyArray<readonly [number, string]>
      assert.deepStrictEqual(replies.map(([code]) => code), [250, 452, 250, 250])
      assert.match(replies[0]![1], /^2\.0\.0 .*<a@example\.net>/)
      assert.strictEqual(replies[1]![1], "4.2.2 Mailbox full")
      assert.match(replies[2]![1], /^2\.0\.0 .*<b@example\.net>/)
      assert.strictEqual(server.received.length, 1)
      const m = server.received[0]!
      assert.strictEqual(m.helo, "client.test")
      assert.deepStrictEqual(m.rcpts.map((r) => r.to), ["a@example.net", "full@example.net", "b@example.net"])
      assert.strictEqual(Files.latin1(m.body), "Subject: lmtp\r\n\r\nhello\r\n")
    }))
})
