/**
 * A real Postfix delivering into effect-smtp: its SMTP client relays to the library's server
 * over STARTTLS (`smtp_tls_security_level = encrypt`, the test CA trusted) with PIPELINING;
 * its LMTP client delivers into `effect-smtp serve --lmtp` over a Unix socket owned by the
 * `postfix` user. Refusals come back the way Postfix handles them: a 5xx bounces to the
 * sender (the DSN arrives at the same server), a 4xx defers until a flush, then the message
 * arrives exactly once. Postfix's SMTP client does not implement BDAT (only its server does),
 * so it sends DATA although CHUNKING is offered; CHUNKING with Postfix is exercised the other
 * way round, in client-postfix.test.ts.
 *
 * One Postfix and one of each server for the whole file; every test has its own addresses
 * and Message-ID.
 */
import { assert, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Address } from "../../src/Address.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import * as Cli from "../support/cli.ts"
import * as Files from "./support/files.ts"
import * as Postfix from "./support/postfix.ts"
import * as Server from "./support/server.ts"
import * as WireTap from "./support/wireTap.ts"

const noSuchUser = SmtpError.of(550, [5, 1, 1], "No such user here")
const tryLater = SmtpError.of(451, [4, 3, 0], "Try again later")

/** `later@…` is refused with 451 once, then accepted. */
const deferredOnce = new Set<Address>()
const behaviour: Server.Behaviour = {
  rejectRcpt: (to) => {
    if (to.startsWith("refused@")) return noSuchUser
    if (to.startsWith("later@") && !deferredOnce.has(to)) {
      deferredOnce.add(to)
      return tryLater
    }
    return undefined
  }
}

interface Peers {
  readonly postfix: Postfix.Postfix
  /** The library's SMTP server behind relay.test and sender.test (where bounces go). */
  readonly smtp: Server.Running
  readonly tap: WireTap.WireTap
  /** `effect-smtp serve --lmtp` behind lmtp.test. */
  readonly lmtp: { readonly cli: Cli.Running; readonly maildir: string; readonly socket: string }
}

class Relay extends Context.Service<Relay, Peers>()("test/PostfixRelay") {
  static readonly layer = Layer.effect(
    Relay,
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const tap = WireTap.make()
      const smtp = yield* Server.start({ listen: [Server.tcp()], behaviour, network: tap.layer })

      const socket = files.path("lmtp.sock")
      const maildir = files.path("maildir")
      const cli = yield* Effect.acquireRelease(
        Effect.sync(() =>
          Cli.start([
            "serve",
            "--lmtp",
            "--listen",
            `unix:${socket}`,
            "--unix-owner",
            "postfix",
            "--unix-mode",
            "0600",
            "--maildir",
            maildir,
            "--domain",
            "lmtp.test",
            "--fault",
            "rcpt:^unknown@=550 5.1.1 No such user",
            "--fault",
            "data:^full@=552 5.2.2 Mailbox full"
          ])
        ),
        (r) => Effect.promise(() => r.stop())
      )
      yield* Effect.promise(() => cli.waitFor((e) => e.event === "listening"))

      const relay = `[127.0.0.1]:${smtp.port()}`
      const postfix = yield* Postfix.start(files, {
        main: {
          transport_maps: `texthash:${files.path("postfix")}/transport`,
          smtp_tls_security_level: "encrypt",
          smtp_tls_CAfile: files.caFile(),
          lmtp_tls_security_level: "none"
        },
        tables: {
          transport: [
            ["relay.test", `smtp:${relay}`],
            ["sender.test", `smtp:${relay}`],
            ["lmtp.test", `lmtp:unix:${socket}`]
          ]
        }
      })
      return { postfix, smtp, tap, lmtp: { cli, maildir, socket } }
    })
  )
}

const sender = "sender@sender.test"

/** A message with dot-leading lines (a lone "." too), 8-bit text and `lines` more lines. */
const message = (id: string, to: ReadonlyArray<string>, lines = 0) =>
  [
    `From: Sender <${sender}>`,
    `To: ${to.join(", ")}`,
    `Subject: ${id}`,
    "Date: Mon, 1 Dec 2025 10:00:00 +0000",
    `Message-ID: <${id}@sender.test>`,
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    ".leading dot",
    "..two dots",
    ".",
    "Grüße ✓",
    ...Array.from({ length: lines }, (_, i) => `${i % 7 === 0 ? "." : ""}line ${i} ${"0123456789abcdef".repeat(4)}`),
    ""
  ].join("\r\n")

/**
 * What arrives is the message as submitted, under the one header Postfix adds on local
 * submission: `Received: by postfix.test (Postfix, from userid 0)` (folded, with its queue ID).
 */
const assertArrived = (body: Uint8Array | string, sent: string, queueId: string) => {
  const text = typeof body === "string" ? body : Buffer.from(body).toString("utf8")
  const received = new RegExp(`^Received: by postfix\\.test \\(Postfix, from userid 0\\)\\r\\n\\tid ${queueId}; [^\\r\\n]+\\r\\n`)
  const header = received.exec(text)
  assert.isNotNull(header, text.slice(0, 300))
  assert.isTrue(text.slice(header![0].length) === sent, "the message arrived byte for byte")
}

/** The messages the SMTP server accepted whose Message-ID is `id`. */
const arrivals = (smtp: Server.Running, id: string) =>
  smtp.received.filter((m) => Buffer.from(m.body).toString("utf8").includes(`\r\nMessage-ID: <${id}@sender.test>\r\n`))

/** The per-recipient fields of a DSN's message/delivery-status part (RFC 3464). */
const dsnRecipients = (dsn: string) =>
  dsn.split(/\r\n\r\n/).filter((block) => /^Final-Recipient:/m.test(block)).map((block) => {
    const field = (name: string) => new RegExp(`^${name}: ([^\\r\\n]*(?:\\r\\n[ \\t][^\\r\\n]*)*)`, "m").exec(block)?.[1]
    return {
      recipient: field("Final-Recipient"),
      action: field("Action"),
      status: field("Status"),
      diagnostic: field("Diagnostic-Code")?.replace(/\r\n[ \t]+/g, " ")
    }
  })

/** Waits for Postfix's bounce for `queueId` to arrive at the SMTP server, and returns it. */
const bounceOf = (peers: Peers, queueId: string) =>
  Effect.gen(function*() {
    const { postfix, smtp } = peers
    const bounceId = yield* postfix.logged((log) =>
      new RegExp(`: ${queueId}: sender non-delivery notification: ([0-9A-F]+)$`, "m").exec(log)?.[1]
    )
    const d = yield* postfix.delivery(bounceId, sender)
    assert.strictEqual(d.status, "sent", d.text)
    const dsn = smtp.received.find((m) => Buffer.from(m.body).toString("utf8").includes(`X-Postfix-Queue-ID: ${queueId}\r\n`))
    assert.isDefined(dsn)
    assert.strictEqual(dsn!.from, null, "a bounce has the null sender")
    assert.deepStrictEqual(dsn!.rcpts.map((r) => r.to), [sender])
    const text = Buffer.from(dsn!.body).toString("utf8")
    assert.match(text, /^Content-Type: multipart\/report; report-type=delivery-status;/m)
    return text
  })

layer(Relay.layer, { excludeTestServices: true, timeout: "60 seconds" })("Postfix → effect-smtp", (it) => {
  it.effect("relays over STARTTLS (encrypt, trusted chain) with PIPELINING: byte-exact, the envelope intact", () =>
    Effect.gen(function*() {
      const peers = yield* Relay
      const { postfix, smtp, tap } = peers
      const to = ["a@relay.test", "b@relay.test"]
      const sent = message("relay-1", to, 3000) // about 200 kB
      yield* postfix.sendmail(sent, sender, to)
      const queueId = yield* postfix.queueId("relay-1@sender.test")
      for (const rcpt of to) {
        const d = yield* postfix.delivery(queueId, rcpt)
        assert.strictEqual(d.status, "sent", d.text)
        assert.match(d.text, /^250 2\.0\.0 /)
      }
      // Encrypted, and the chain checked against the CA (encrypt does not require it).
      assert.match(postfix.log(), new RegExp(`Trusted TLS connection established to 127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${smtp.port()}`))

      const [m, ...more] = arrivals(smtp, "relay-1")
      assert.deepStrictEqual(more, [])
      assert.strictEqual(m!.from, sender)
      assert.deepStrictEqual(m!.rcpts.map((r) => r.to), to)
      assert.strictEqual(m!.helo, "postfix.test")
      assert.isDefined(m!.tls)
      assert.strictEqual(m!.mailOptions.body, "8BITMIME")
      assert.isAtLeast(m!.mailOptions.size ?? 0, Buffer.byteLength(sent), "SIZE is declared")
      assertArrived(m!.body, sent, queueId)

      // On the wire: MAIL, both RCPTs and DATA in one write (PIPELINING), then the body with
      // its dot-leading lines stuffed. Postfix's client has no BDAT: DATA, though CHUNKING is offered.
      const reads = tap.connections.find((c) => c.some((r) => r.includes("Message-ID: <relay-1@sender.test>")))
      assert.isDefined(reads)
      const envelope = reads!.find((r) => r.startsWith("MAIL FROM:"))
      assert.strictEqual(
        envelope,
        `MAIL FROM:<${sender}> SIZE=${m!.mailOptions.size} BODY=8BITMIME\r\nRCPT TO:<a@relay.test>\r\nRCPT TO:<b@relay.test>\r\nDATA\r\n`
      )
      assert.include(reads!.join(""), "\r\n\r\n..leading dot\r\n...two dots\r\n..\r\n")
      assert.isFalse(reads!.some((r) => r.includes("BDAT")))
    }))

  it.effect("a recipient refused with 5xx bounces to the sender as a DSN; the other is delivered", () =>
    Effect.gen(function*() {
      const peers = yield* Relay
      const { postfix, smtp } = peers
      const to = ["ok@relay.test", "refused@relay.test"]
      const sent = message("bounce-1", to)
      yield* postfix.sendmail(sent, sender, to)
      const queueId = yield* postfix.queueId("bounce-1@sender.test")
      const ok = yield* postfix.delivery(queueId, "ok@relay.test")
      assert.strictEqual(ok.status, "sent", ok.text)
      const refused = yield* postfix.delivery(queueId, "refused@relay.test")
      assert.deepStrictEqual([refused.status, refused.dsn], ["bounced", "5.1.1"])
      assert.match(refused.text, /said: 550 5\.1\.1 No such user here \(in reply to RCPT TO command\)$/)

      const [m, ...more] = arrivals(smtp, "bounce-1").filter((x) => x.from === sender)
      assert.deepStrictEqual(more, [])
      assert.deepStrictEqual(m!.rcpts.map((r) => r.to), ["ok@relay.test"])
      assertArrived(m!.body, sent, queueId)

      const dsn = yield* bounceOf(peers, queueId)
      assert.deepStrictEqual(dsnRecipients(dsn), [{
        recipient: "rfc822; refused@relay.test",
        action: "failed",
        status: "5.1.1",
        diagnostic: "smtp; 550 5.1.1 No such user here"
      }])
      // The returned message is the one sent.
      assert.include(dsn, "Content-Type: message/rfc822")
      assert.include(dsn, "\r\nMessage-ID: <bounce-1@sender.test>\r\n")
    }))

  it.effect("a 4xx defers the recipient; after a flush the message arrives exactly once", () =>
    Effect.gen(function*() {
      const { postfix, smtp } = yield* Relay
      const to = ["now@relay.test", "later@relay.test"]
      const sent = message("defer-1", to)
      yield* postfix.sendmail(sent, sender, to)
      const queueId = yield* postfix.queueId("defer-1@sender.test")
      const now = yield* postfix.delivery(queueId, "now@relay.test")
      assert.strictEqual(now.status, "sent", now.text)
      const first = yield* postfix.delivery(queueId, "later@relay.test")
      assert.deepStrictEqual([first.status, first.dsn], ["deferred", "4.3.0"])
      assert.match(first.text, /said: 451 4\.3\.0 Try again later \(in reply to RCPT TO command\)$/)

      // The attempt over, the message waits in the deferred queue, for "later" only.
      const entry = yield* postfix.queued(queueId, "deferred")
      assert.deepStrictEqual(entry.recipients.map((r) => r.address), ["later@relay.test"])
      assert.deepStrictEqual(arrivals(smtp, "defer-1").map((m) => m.rcpts.map((r) => r.to)), [["now@relay.test"]])

      yield* postfix.flush
      const second = yield* postfix.delivery(queueId, "later@relay.test", 1)
      assert.strictEqual(second.status, "sent", second.text)
      yield* postfix.removed(queueId)
      assert.isFalse((yield* postfix.queue).some((m) => m.queue_id === queueId), "nothing left to try again")
      const all = arrivals(smtp, "defer-1")
      assert.deepStrictEqual(all.map((m) => m.rcpts.map((r) => r.to)), [["now@relay.test"], ["later@relay.test"]])
      for (const m of all) assertArrived(m.body, sent, queueId)
    }))

  it.effect("LMTP into `serve --lmtp` over a socket owned by postfix: per-recipient statuses, refusals bounce", () =>
    Effect.gen(function*() {
      const peers = yield* Relay
      const { lmtp, postfix } = peers
      const socket = fs.lstatSync(lmtp.socket)
      assert.strictEqual(socket.mode & 0o777, 0o600)
      assert.strictEqual(socket.uid, Number(execFileSync("id", ["-u", "postfix"], { encoding: "utf8" })))

      const to = ["one@lmtp.test", "full@lmtp.test", "two@lmtp.test", "unknown@lmtp.test"]
      const sent = message("lmtp-1", to)
      yield* postfix.sendmail(sent, sender, to)
      const queueId = yield* postfix.queueId("lmtp-1@sender.test")
      const status = (rcpt: string) => Effect.map(postfix.delivery(queueId, rcpt), (d) => [d.status, d.dsn, d.text] as const)
      for (const rcpt of ["one@lmtp.test", "two@lmtp.test"]) {
        const [state, dsn, text] = yield* status(rcpt)
        assert.deepStrictEqual([state, dsn], ["sent", "2.0.0"], text)
        assert.match(text, /^250 2\.0\.0 /)
      }
      const [fullState, fullDsn, fullText] = yield* status("full@lmtp.test")
      assert.deepStrictEqual([fullState, fullDsn], ["bounced", "5.2.2"])
      assert.match(fullText, /said: 552 5\.2\.2 Mailbox full \(in reply to end of DATA command\)$/)
      const [unknownState, unknownDsn, unknownText] = yield* status("unknown@lmtp.test")
      assert.deepStrictEqual([unknownState, unknownDsn], ["bounced", "5.1.1"])
      assert.match(unknownText, /said: 550 5\.1\.1 No such user \(in reply to RCPT TO command\)$/)

      // One file, for the two who took it, holding the message as submitted.
      const event = yield* Effect.promise(() => lmtp.cli.waitFor((e) => e.event === "received"))
      assert.strictEqual(event.from, sender)
      assert.deepStrictEqual(event.to, ["one@lmtp.test", "two@lmtp.test"])
      assert.strictEqual(event.helo, "postfix.test")
      assertArrived(fs.readFileSync(event.path as string, "utf8"), sent, queueId)
      assert.deepStrictEqual(fs.readdirSync(`${lmtp.maildir}/new`), [path.basename(event.path as string)])

      const dsn = yield* bounceOf(peers, queueId)
      assert.sameDeepMembers(dsnRecipients(dsn), [
        { recipient: "rfc822; full@lmtp.test", action: "failed", status: "5.2.2", diagnostic: "smtp; 552 5.2.2 Mailbox full" },
        { recipient: "rfc822; unknown@lmtp.test", action: "failed", status: "5.1.1", diagnostic: "smtp; 550 5.1.1 No such user" }
      ])
    }))
})
