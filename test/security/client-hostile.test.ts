/**
 * The client against hostile servers: random bytes in place of any reply, replies that never
 * end, mixed codes, replies to the wrong command, a 1 MB reply line, endless SASL challenges,
 * plaintext after the 220 to STARTTLS. Whatever the server does, every operation ends, within
 * the client's own timeouts (virtual time), with a success or a typed failure (SmtpError,
 * TransportError, SmtpProtocolError, SmtpClientError, RecipientsRefused): never a defect,
 * never a hang.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Redacted from "effect/Redacted"
import { TestClock } from "effect/testing"
import * as fc from "fast-check"
import * as NodeTransport from "../../src/NodeTransport.ts"
// Loaded up front: the client imports Sasl when it first authenticates, a real-time wait
// that virtual time would outrun (the client then looks "still busy after 660 s").
import "../../src/Sasl.ts"
import type * as Sasl from "../../src/Sasl.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import type { TlsServerOptions } from "../../src/Transport.ts"
import { testCerts } from "../support/certs.ts"
import * as Scripted from "../support/ScriptedServer.ts"
import { bytes } from "./support/arbitraries.ts"
import { property, timeoutOf } from "./support/fuzz.ts"
import { settle } from "./support/hostile.ts"

const typedFailures = ["SmtpError", "TransportError", "SmtpProtocolError", "SmtpClientError", "RecipientsRefused"]

/** A success, or a failure with one of the client's typed errors only: no defect, no interruption. */
const assertTypedOutcome = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "success"
  for (const reason of exit.cause.reasons) {
    if (reason._tag === "Die") assert.fail(`the client died: ${String(reason.defect)}`)
    if (reason._tag === "Interrupt") assert.fail("the client was interrupted")
    const tag = (reason.error as { readonly _tag?: string })._tag ?? "untagged"
    assert.include(typedFailures, tag, `an untyped failure: ${String(reason.error)}`)
  }
  const first = exit.cause.reasons[0]
  return first?._tag === "Fail" ? (first.error as { readonly _tag: string })._tag : "none"
}

/**
 * Runs `program` in the background and lets virtual time pass, 30 s at a time, until it ends.
 * Fails if it has not ended after `limit`. Returns its exit and the virtual time it took.
 */
const boundedRun = <A, E>(program: Effect.Effect<A, E>, limit: Duration.Input) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(program)
    const limitMs = Duration.toMillis(Duration.fromInputUnsafe(limit))
    let elapsed = 0
    yield* settle
    while (fiber.pollUnsafe() === undefined) {
      if (elapsed >= limitMs) assert.fail(`the client was still busy after ${elapsed / 1000} s of virtual time`)
      yield* TestClock.adjust("30 seconds")
      elapsed += 30_000
      yield* settle
    }
    return { exit: yield* Fiber.await(fiber), elapsed }
  })

/** Where the poison goes, what it is, and what the server does after it. */
interface Poison {
  /** Which of the server's replies (0: the greeting) is replaced. */
  readonly at: number
  readonly wire: string
  readonly then: "close" | "silent" | "carry on"
}

/** Replies that break the protocol in every way a server can. */
const badReply = fc.oneof(
  { weight: 3, arbitrary: bytes(300) },
  {
    weight: 5,
    arbitrary: fc.constantFrom(
      "250-x\r\n".repeat(200) + "250 x\r\n",
      "250-first\r\n550 second\r\n",
      "2x0 hello\r\n",
      "699 nope\r\n",
      "199 too low\r\n",
      "250_ok\r\n",
      `250 ${"x".repeat(1024 * 1024)}\r\n`,
      "354 go ahead\r\n",
      "334 \r\n",
      "334 bm90IGFza2Vk\r\n",
      "220 hello again\r\n",
      "421 4.3.2 going away\r\n",
      "250 ok",
      "\r\n",
      "250\r\n",
      "250-\r\n",
      "\0\0\0\r\n",
      "250 ok\n",
      "250 ok\r",
      "250 \xff\xfe\xc3\x28\r\n",
      "250 ok\r\n250 one too many\r\n",
      "250 2.1.0 ok\r\n550 5.1.1 no\r\n354 go\r\n250 2.0.0 done\r\n",
      "552 5.3.4 too big\r\n",
      "250-ok\r\n250-ok\r\n",
      "HTTP/1.1 400 Bad Request\r\n\r\n",
      "\x15\x03\x03\x00\x02\x02\x46"
    )
  }
)

const poison: fc.Arbitrary<Poison> = fc.record({
  at: fc.integer({ min: 0, max: 9 }),
  wire: badReply,
  then: fc.constantFrom("close", "silent", "carry on")
})

const extensions = fc.subarray(["PIPELINING", "CHUNKING", "8BITMIME", "SIZE 1000000", "STARTTLS", "ENHANCEDSTATUSCODES", "DSN", "AUTH PLAIN LOGIN"])

/** A server that plays its part correctly, except for the poisoned reply. */
const poisonedServer = (poison: Poison, offered: ReadonlyArray<string>, tls?: TlsServerOptions) => (p: Scripted.ServerPeer) =>
  Effect.gen(function*() {
    let n = 0
    const answer = (wire: string) =>
      Effect.gen(function*() {
        if (n++ !== poison.at) return yield* p.send(wire)
        yield* p.send(poison.wire)
        if (poison.then === "close") return yield* p.close
        if (poison.then === "silent") return yield* Effect.never
      })
    yield* answer("220 mx.test ESMTP\r\n")
    while (true) {
      const line = yield* p.line
      const verb = line.slice(0, 4).toUpperCase()
      if (verb === "EHLO") {
        yield* answer(["mx.test", ...offered].map((l, i, all) => `250${i === all.length - 1 ? " " : "-"}${l}\r\n`).join(""))
      } else if (verb === "DATA") {
        yield* answer("354 go ahead\r\n")
        yield* p.until("\r\n.\r\n")
        yield* answer("250 2.0.0 queued\r\n")
      } else if (verb === "BDAT") {
        yield* p.bytes(Number(line.split(" ")[1]))
        yield* answer("250 2.0.0 chunk\r\n")
      } else if (verb === "STAR") {
        yield* answer("220 2.0.0 go ahead\r\n")
        yield* p.startTls(tls)
      } else if (verb === "AUTH") {
        yield* answer(line.includes(" ", 5) ? "235 2.7.0 ok\r\n" : "334 VXNlcm5hbWU6\r\n")
      } else if (verb === "QUIT") {
        yield* answer("221 2.0.0 bye\r\n")
        return
      } else if (line.startsWith("dXNl") || line.startsWith("cGFz")) {
        yield* answer(line.startsWith("dXNl") ? "334 UGFzc3dvcmQ6\r\n" : "235 2.7.0 ok\r\n")
      } else {
        yield* answer("250 2.0.0 ok\r\n")
      }
    }
  })

const credentials: Sasl.Credentials = { _tag: "Password", username: "user", password: Redacted.make("pass") }

describe("the client against hostile servers (virtual time)", () => {
  it.effect("any reply replaced by garbage, then close, silence or carrying on: a typed outcome in bounded time", () =>
    property("client: poisoned replies", fc.record({ poison, offered: extensions, transfer: fc.constantFrom("data", "bdat", "auto") }), (c) =>
      Effect.scoped(Effect.gen(function*() {
        const s = yield* Scripted.pair(poisonedServer(c.poison, c.offered))
        const program = Effect.scoped(Effect.gen(function*() {
          const client = yield* SmtpClient.fromTransport(s.client, {
            security: "opportunistic",
            allowInsecureAuth: true,
            ...(c.offered.includes("AUTH PLAIN LOGIN") ? { auth: credentials } : {})
          })
          yield* client.send({
            from: "a@b.example",
            to: ["c@d.example", "e@f.example"],
            body: "Subject: x\r\n\r\nhello\r\n.\r\n",
            transfer: c.transfer
          })
          yield* client.noop
          yield* client.quit
        }))
        const { exit } = yield* boundedRun(program, "11 minutes")
        assertTypedOutcome(exit)
      })), { runs: 150 }))

  it.effect("random bytes as the whole conversation: a typed outcome in bounded time", () =>
    property("client: noise server", fc.tuple(bytes(2000), fc.constantFrom("close", "silent")), ([noise, then]) =>
      Effect.scoped(Effect.gen(function*() {
        const s = yield* Scripted.pair((p) =>
          Effect.andThen(p.send(noise), then === "close" ? p.close : Effect.never)
        )
        const { exit } = yield* boundedRun(
          Effect.scoped(Effect.flatMap(SmtpClient.fromTransport(s.client, { security: "opportunistic" }), (client) => client.noop)),
          "6 minutes"
        )
        assertTypedOutcome(exit)
      })), { runs: 60 }))

  it.effect("an endless multi-line reply, fast: MalformedReply after 128 lines, and the connection is dropped", () =>
    Effect.gen(function*() {
      let sent = 0
      const s = yield* Scripted.pair((p) =>
        Effect.gen(function*() {
          while (true) {
            yield* p.send("250-and more\r\n")
            sent++
            yield* Effect.yieldNow
          }
        }))
      const { exit } = yield* boundedRun(Effect.scoped(SmtpClient.fromTransport(s.client, { security: "none" })), "1 minute")
      assert.strictEqual(assertTypedOutcome(exit), "SmtpProtocolError")
      assert.isBelow(sent, 10_000, "the server could go on writing long after the client gave up")
    }))

  it.effect("an endless multi-line reply, one line every 10 s: the greeting timeout covers the whole reply", () =>
    Effect.gen(function*() {
      const s = yield* Scripted.pair((p) =>
        Effect.gen(function*() {
          while (true) {
            yield* p.send("220-still greeting you\r\n")
            yield* Effect.sleep("10 seconds")
          }
        }))
      const { exit, elapsed } = yield* boundedRun(
        Effect.scoped(SmtpClient.fromTransport(s.client, { security: "none", timeouts: { greeting: "2 minutes" } })),
        "10 minutes"
      )
      assert.strictEqual(assertTypedOutcome(exit), "TransportError")
      assert.strictEqual(elapsed, 120_000)
    }))

  it.effect("a reply line of 1 MB, dripped in 8 KiB pieces: the client stops reading after 64 KiB", () =>
    Effect.gen(function*() {
      let pieces = 0
      const s = yield* Scripted.pair((p) =>
        Effect.gen(function*() {
          yield* p.send("220 ")
          for (let i = 0; i < 128; i++) {
            yield* p.send("x".repeat(8192))
            pieces++
            yield* settle
          }
          yield* p.send("\r\n")
        }))
      // (Each round of virtual time lets the script send about one piece.)
      const { exit } = yield* boundedRun(Effect.scoped(SmtpClient.fromTransport(s.client, { security: "none" })), "10 minutes")
      assert.strictEqual(assertTypedOutcome(exit), "SmtpProtocolError")
      // A reply may take 64 KiB in all: once past it the client hangs up, and writes fail.
      assert.isBelow(pieces, 10)
    }))

  it.effect.each(["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "SCRAM-SHA-256"])("endless 334 challenges to AUTH %s end in a few rounds", (mechanism) =>
    Effect.gen(function*() {
      let rounds = 0
      const s = yield* Scripted.pair((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, `AUTH ${mechanism}`)
          yield* p.expect(/^AUTH /)
          while (true) {
            // "Username:", then the same prompt again and again.
            yield* p.send("334 VXNlcm5hbWU6\r\n")
            yield* p.line
            rounds++
          }
        }))
      const input: Sasl.Credentials = mechanism === "XOAUTH2"
        ? { _tag: "Bearer", username: "user", token: Redacted.make("token") }
        : credentials
      const { exit } = yield* boundedRun(
        Effect.scoped(Effect.flatMap(SmtpClient.fromTransport(s.client, { security: "none", allowInsecureAuth: true }), (client) => client.auth(input))),
        "6 minutes"
      )
      assertTypedOutcome(exit)
      assert.isBelow(rounds, 5)
    }))

  it.effect.each(["in the same write as the 220", "just after the 220"])("plaintext %s to STARTTLS never becomes a reply", (when) =>
    Effect.gen(function*() {
      const s = yield* Scripted.pair((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "STARTTLS")
          yield* p.expect("STARTTLS")
          if (when === "in the same write as the 220") {
            yield* p.send("220 2.0.0 go ahead\r\n250-mx.test\r\n250 AUTH PLAIN\r\n")
          } else {
            yield* p.send("220 2.0.0 go ahead\r\n")
            yield* p.send("250-mx.test\r\n250 AUTH PLAIN\r\n")
          }
          yield* p.startTls()
          yield* p.expect(/^EHLO /)
          yield* Scripted.ehlo(p, "PIPELINING")
          yield* Effect.never
        }))
      const { exit } = yield* boundedRun(
        Effect.scoped(Effect.map(SmtpClient.fromTransport(s.client, { security: "starttls" }), (client) => client.authMechanisms())),
        "3 minutes"
      )
      const outcome = assertTypedOutcome(exit)
      // Read together with the 220, it is an attack; arriving later, the TLS layer drops it.
      if (outcome === "success") assert.deepStrictEqual(Exit.isSuccess(exit) ? exit.value : undefined, [])
      else assert.strictEqual(outcome, "SmtpProtocolError")
    }))
})

describe("the client against hostile servers over TCP", () => {
  const certs = testCerts()
  // Short: only the bound on the whole is checked, and a timeout is as typed an outcome as any.
  const short = "300 millis"
  const quick: SmtpClient.Timeouts = {
    connect: short,
    greeting: short,
    command: short,
    mail: short,
    rcpt: short,
    dataInitiation: short,
    dataBlock: short,
    dataTermination: short,
    tlsHandshake: short,
    quit: short
  }

  it.live("garbage replies from a real socket: typed outcomes within the client's timeouts", () =>
    Effect.gen(function*() {
      yield* property("client: poisoned replies over TCP", fc.record({ poison, offered: extensions }), (c) =>
        Effect.scoped(Effect.gen(function*() {
          const server = yield* Scripted.listen(
            poisonedServer(c.poison, c.offered, { key: certs.server.key, cert: certs.server.cert })
          ).pipe(Effect.provide(NodeTransport.layer))
          const started = Date.now()
          const exit = yield* Effect.exit(
            SmtpClient.sendMail({
              endpoint: server.endpoint,
              security: "opportunistic",
              tls: { ca: certs.ca },
              from: "a@b.example",
              to: "c@d.example",
              body: "hello\r\n",
              timeouts: quick
            }).pipe(Effect.provide(NodeTransport.layer))
          )
          assertTypedOutcome(exit)
          assert.isBelow(Date.now() - started, 10_000)
        })), { runs: 10, shrink: false })
    }), timeoutOf(60_000))
})
