/**
 * The server under hostile input: random bytes, and structured garbage (commands in any case,
 * pathological addresses, thousands of parameters, BDAT sizes of every kind, AUTH with bad
 * base64, DATA with every line ending, lines at every length limit, other protocols).
 *
 * Whatever arrives: every reply is well-formed, every negative one carries an enhanced status
 * code, the server hangs up only after a documented reply (221, 421, 500 5.5.2), every
 * message it says it accepted reached the backend and no other did, nothing is logged as an
 * internal error, no connection is left behind, and the next connection is served normally.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as fc from "fast-check"
import * as Sasl from "../../src/Sasl.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import { makeBackend } from "../support/backend.ts"
import { testCerts } from "../support/certs.ts"
import { memoryTls } from "../support/ScriptedServer.ts"
import { envelope, loopback, type Net, replies, show, start, type StartOptions, waitFor } from "../support/server.ts"
import { authConversation, bodyConversation, conversation, foreignProtocol, noise } from "./support/arbitraries.ts"
import { property, timeoutOf } from "./support/fuzz.ts"
import { errorLogs, fromLatin1, memoryAttack, openSockets, servesNormally, split, tcpAttack } from "./support/hostile.ts"
import { acceptedMessages, parseTranscript, showReply } from "./support/transcript.ts"

const certs = testCerts()

/** A server with everything switched on that parses more: AUTH in plaintext, STARTTLS, every extension. */
const hostileTarget = (net: Net, options: Partial<StartOptions> = {}) =>
  Effect.gen(function*() {
    const secret = (name: string) => Effect.succeed(name === "user" ? Redacted.make("pass") : undefined)
    const scram = yield* Effect.orDie(Sasl.deriveScramCredential("pass"))
    const refused = new Sasl.SaslError({ reason: "AuthenticationFailed", message: "refused" })
    const backend = makeBackend({
      auth: Sasl.serverMechanisms({
        password: Sasl.passwordVerifier(secret),
        cramMd5: secret,
        scramSha256: (name) => Effect.succeed(name === "user" ? scram : undefined),
        bearer: ({ token }) => Redacted.value(token) === "token" ? Effect.succeed({ identity: "user" }) : Effect.fail(refused),
        anonymous: ({ trace }) => trace === "" ? Effect.fail(refused) : Effect.succeed({ identity: "anonymous" })
      })
    })
    const s = yield* start({
      net,
      backend: backend.layer,
      tls: net === "memory" ? memoryTls : { key: certs.server.key, cert: certs.server.cert },
      allowInsecureAuth: true,
      extensions: { smtputf8: true, binaryMime: true, dsn: true, rrvs: true, deliverBy: true, mtPriority: true, requireTls: true },
      ...options
    })
    return { s, rec: backend.rec }
  })

type Case = { readonly text: string; readonly cuts: ReadonlyArray<number>; readonly paced: boolean }

/** One hostile connection in memory, then every check of the standard. */
const memoryCase = (target: Effect.Success<ReturnType<typeof hostileTarget>>) => (c: Case) =>
  Effect.gen(function*() {
    const { s, rec } = target
    const storedBefore = rec.messages.length
    const errorsBefore = errorLogs(s).length
    const text = yield* memoryAttack(s, split(fromLatin1(c.text), c.cuts), { paced: c.paced })
    const t = parseTranscript(text, { complete: true, closedByServer: true })
    assert.deepStrictEqual(t.problems, [], `server said:\n${text.slice(0, 3000)}`)
    assert.strictEqual(rec.messages.length - storedBefore, acceptedMessages(t), "messages stored vs. messages acknowledged")
    assert.deepStrictEqual(errorLogs(s).slice(errorsBefore), [])
    yield* Effect.scoped(servesNormally(s, rec))
  })

describe("hostile input in memory (virtual time)", () => {
  it.effect("random bytes", () =>
    Effect.gen(function*() {
      const target = yield* hostileTarget("memory")
      yield* property("server: random bytes", noise, memoryCase(target), { runs: 30 })
    }))

  it.effect("structured garbage: commands, addresses, parameters, BDAT, AUTH, DATA, other protocols", () =>
    Effect.gen(function*() {
      const target = yield* hostileTarget("memory")
      yield* property("server: structured garbage", conversation, memoryCase(target), { runs: 80 })
    }))

  it.effect("AUTH exchanges with every mechanism and every kind of bad response", () =>
    Effect.gen(function*() {
      const target = yield* hostileTarget("memory")
      yield* property("server: AUTH garbage", authConversation, memoryCase(target), { runs: 60 })
    }))

  it.effect("DATA and BDAT bodies of every shape inside transactions", () =>
    Effect.gen(function*() {
      // Bodies pipelined after DATA get deep only where that is allowed.
      const target = yield* hostileTarget("memory", { forbidUnauthorizedPipelining: false })
      yield* property("server: body garbage", bodyConversation, memoryCase(target), { runs: 60 })
    }))

  it.effect("DATA and BDAT bodies of every shape, under the default refusals (pipelining past DATA hangs up)", () =>
    Effect.gen(function*() {
      const target = yield* hostileTarget("memory")
      yield* property("server: body garbage, defaults", bodyConversation, memoryCase(target), { runs: 30 })
    }))

  it.effect("structured garbage with the Postfix-style refusals off, so that it gets deeper", () =>
    Effect.gen(function*() {
      const target = yield* hostileTarget("memory", { refuseNonSmtp: false, forbidUnauthorizedPipelining: false })
      yield* property("server: structured garbage, lenient", conversation, memoryCase(target), { runs: 60 })
    }))

  it.effect("bodies under a tight body line limit, bare line endings normalised or allowed", () =>
    Effect.gen(function*() {
      for (const bareLineEndings of ["normalize", "allow"] as const) {
        const target = yield* hostileTarget("memory", { maxBodyLineLength: 40, bareLineEndings, forbidUnauthorizedPipelining: false })
        yield* property(`server: body garbage, line limit, ${bareLineEndings}`, bodyConversation, memoryCase(target), { runs: 25 })
      }
    }))

  it.effect("structured garbage against a server that waits before its greeting, traces everything, and has small limits", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* hostileTarget("memory", { greetingDelay: "2 seconds", logTraffic: true, maxLineLength: 200, maxBodyLineLength: 100 })
      // (No fresh connection after each case: its greeting would wait for the TestClock.)
      yield* property("server: structured garbage, greeting delay, trace", conversation, (c) =>
        Effect.gen(function*() {
          const storedBefore = rec.messages.length
          const text = yield* memoryAttack(s, split(fromLatin1(c.text), c.cuts), { paced: c.paced })
          const t = parseTranscript(text, { complete: true, closedByServer: true })
          assert.deepStrictEqual(t.problems, [], `server said:\n${text.slice(0, 3000)}`)
          assert.strictEqual(rec.messages.length - storedBefore, acceptedMessages(t))
          assert.deepStrictEqual(errorLogs(s), [])
          yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
          assert.strictEqual(rec.logouts(), rec.sessions.length)
        }), { runs: 30 })
    }))

  it.effect("structured garbage against sessions the backend refuses (554): only QUIT, 503 to the rest", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* hostileTarget("memory")
      const refusing = makeBackend({ newSession: () => Effect.fail(SmtpError.of(554, [5, 7, 1], "Not here")) })
      const r = yield* start({ net: "memory", backend: refusing.layer, timeouts: { refusedSession: "5 seconds" } })
      yield* property("server: refused sessions", conversation, (c) =>
        Effect.gen(function*() {
          const text = yield* memoryAttack(r, split(fromLatin1(c.text), c.cuts), { paced: c.paced })
          const t = parseTranscript(text, { complete: true, closedByServer: true })
          assert.deepStrictEqual(t.problems, [], `server said:\n${text.slice(0, 3000)}`)
          assert.strictEqual(showReply(t.replies[0]!), "554 5.7.1 Not here")
          assert.isTrue(t.replies.slice(1).every((x) => ["503 5.5.1", "221 2.0.0", "421 4.4.2", "421 4.7.0", "500 5.5.2"].includes(`${x.code} ${x.enhanced}`)))
          assert.deepStrictEqual(refusing.rec.messages, [])
          assert.deepStrictEqual(errorLogs(r), [])
        }), { runs: 25 })
      yield* Effect.scoped(servesNormally(s, rec))
    }))

  it.effect("structured garbage with lines of up to 1 MB, so huge parameter lists get parsed", () =>
    Effect.gen(function*() {
      const target = yield* hostileTarget("memory", { maxLineLength: 1_000_000 })
      yield* property("server: structured garbage, long lines", conversation, memoryCase(target), { runs: 40 })
    }))

  it.effect("structured garbage against an LMTP server", () =>
    Effect.gen(function*() {
      const target = yield* hostileTarget("memory", { protocol: "lmtp" })
      const lmtp = conversation.map((c) => ({ ...c, text: c.text.replace(/EHLO/g, "LHLO") }))
      yield* property("server: structured garbage, LMTP", lmtp, (c) =>
        Effect.gen(function*() {
          const { s, rec } = target
          const text = yield* memoryAttack(s, split(fromLatin1(c.text), c.cuts), { paced: c.paced })
          const t = parseTranscript(text, { complete: true, closedByServer: true })
          assert.deepStrictEqual(t.problems, [], `server said:\n${text.slice(0, 3000)}`)
          assert.deepStrictEqual(errorLogs(s), [])
          yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
          assert.strictEqual(rec.logouts(), rec.sessions.length)
        }), { runs: 30 })
    }))
})

describe("hostile input over TCP", () => {
  // Several hostile connections at once per case; about half half-close after their bytes, the
  // others leave the server to time them out (short timeouts, so the test stays quick).
  const attack = fc.oneof(conversation, noise, foreignProtocol.map((text) => ({ text, cuts: [], paced: false })))
  const batch = fc.array(fc.record({ attack, halfClose: fc.boolean() }), { minLength: 6, maxLength: 10 })

  it.live("structured garbage and random bytes, many connections at once", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* hostileTarget("tcp", {
        timeouts: { command: "2 seconds", data: "2 seconds", tlsHandshake: "2 seconds" },
        errorDelay: "10 millis"
      })
      const sockets = openSockets()
      yield* property("server: hostile TCP batches", batch, (cases) =>
        Effect.gen(function*() {
          const storedBefore = rec.messages.length
          const outcomes = yield* Effect.forEach(cases, ({ attack, halfClose }) =>
            tcpAttack(s.endpoint, split(fromLatin1(attack.text), attack.cuts), { halfClose, timeoutMs: 20_000 }), { concurrency: "unbounded" })
          let acknowledged = 0
          let allSeen = true
          for (const [i, o] of outcomes.entries()) {
            assert.notStrictEqual(o.end, "timeout", `connection ${i} still open after 20 s`)
            // A reset (the server closed with our bytes unread) may cut the last reply short.
            const t = parseTranscript(o.text, { complete: o.end === "closed", closedByServer: o.end === "closed" && !cases[i]!.halfClose })
            assert.deepStrictEqual(t.problems, [], `connection ${i} got:\n${o.text.slice(0, 3000)}`)
            acknowledged += acceptedMessages(t)
            if (o.end !== "closed") allSeen = false
          }
          yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
          const stored = rec.messages.length - storedBefore
          if (allSeen) assert.strictEqual(stored, acknowledged, "messages stored vs. messages acknowledged")
          else assert.isAtLeast(stored, acknowledged)
          assert.deepStrictEqual(errorLogs(s), [])
          yield* Effect.scoped(servesNormally(s, rec))
          // Every socket of these connections is gone, on both sides.
          yield* waitFor(() => openSockets() <= sockets)
        }), { runs: 1, shrink: false })
    }), timeoutOf(60_000))
})

describe("hostile input at an implicit TLS listener (TCP)", () => {
  it.live("plaintext, noise, half a ClientHello or silence: closed within the handshake timeout; TLS clients still served", () =>
    Effect.gen(function*() {
      const { s, rec } = yield* hostileTarget("tcp", {
        listen: [{ endpoint: loopback, implicitTls: true }],
        timeouts: { tlsHandshake: "1 second" }
      })
      const sockets = openSockets()
      const attacks = [
        "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00" + "\xff".repeat(200),
        "",
        "\0".repeat(5000)
      ]
      const outcomes = yield* Effect.forEach(attacks, (text) =>
        tcpAttack(s.endpoint, text === "" ? [] : [fromLatin1(text)], { halfClose: false, timeoutMs: 15_000 }), { concurrency: "unbounded" })
      for (const [i, o] of outcomes.entries()) {
        assert.notStrictEqual(o.end, "timeout", `attack ${i} still open`)
        assert.notMatch(o.text, /^[2-5]\d\d[ -]/, `attack ${i} got a plaintext SMTP reply`)
      }
      yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
      assert.strictEqual(rec.sessions.length, 0)
      const p = yield* s.open({ tls: { ca: certs.ca, servername: "localhost" } })
      assert.strictEqual(show(yield* p.command("EHLO c.example")), "250")
      assert.strictEqual(show(yield* p.command("QUIT")), "221 2.0.0")
      yield* waitFor(() => openSockets() <= sockets)
    }))
})

describe("named attacks, over memory and TCP", () => {
  describe.each<Net>(["memory", "tcp"])("%s", (net) => {
    it.live("an HTTP request: 221 2.7.0 at its first line, and the connection closes; nothing in it runs", () =>
      Effect.gen(function*() {
        const { s, rec } = yield* hostileTarget(net)
        for (const request of [
          "GET / HTTP/1.1\r\nHost: mx.example\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
          "POST /relay HTTP/1.1\r\nHost: mx.example\r\nContent-Length: 24\r\n\r\nMAIL FROM:<a@b.example>\r\n",
          "CONNECT mx.example:25 HTTP/1.1\r\nHost: mx.example:25\r\n\r\n"
        ]) {
          const p = yield* s.open()
          yield* p.write(request)
          assert.deepStrictEqual(yield* replies(p, 1), ["221 2.7.0"])
          assert.isTrue(yield* p.closed)
        }
        assert.notInclude(rec.events.join(), "mail:")
        yield* Effect.scoped(servesNormally(s, rec))
      }))

    it.live("with refuseNonSmtp off, an HTTP request: 500 5.5.2 per line, 421 4.7.0 at the 5th unknown command; nothing in it runs", () =>
      Effect.gen(function*() {
        const { s, rec } = yield* hostileTarget(net, { refuseNonSmtp: false })
        const p = yield* s.open()
        yield* p.write("GET / HTTP/1.1\r\nHost: mx.example\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        assert.deepStrictEqual(yield* replies(p, 6), ["500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2", "421 4.7.0"])
        assert.isTrue(yield* p.closed)
        // A POST whose body holds SMTP commands: the empty line is a syntax error, not a command,
        // and MAIL without EHLO is out of sequence; nothing reaches the backend.
        const q = yield* s.open()
        yield* q.write("POST /relay HTTP/1.1\r\nHost: mx.example\r\nContent-Length: 24\r\n\r\nMAIL FROM:<a@b.example>\r\n")
        assert.deepStrictEqual(yield* replies(q, 5), ["500 5.5.2", "500 5.5.2", "500 5.5.2", "500 5.5.2", "503 5.5.1"])
        assert.strictEqual(show(yield* q.command("QUIT")), "221 2.0.0")
        assert.isTrue(yield* q.closed)
        assert.notInclude(rec.events.join(), "mail:")
        yield* Effect.scoped(servesNormally(s, rec))
      }))

    it.live("NUL, a lone CR and a lone LF inside a command line are never line ends", () =>
      Effect.gen(function*() {
        const { s, rec } = yield* hostileTarget(net)
        const p = yield* s.open()
        yield* p.command("EHLO c.example")
        // The CR, the NUL: one line each, refused whole; the bare LF ends a command line, as in go-smtp.
        yield* p.write("NOOP\rMAIL FROM:<a@b.example>\r\nRSET\0MAIL FROM:<c@d.example>\r\nNOOP\nNOOP\r\n")
        assert.deepStrictEqual(yield* replies(p, 4), ["500 5.5.2", "500 5.5.2", "250 2.0.0", "250 2.0.0"])
        assert.notInclude(rec.events.join(), "mail:")
      }))

    it.live("BDAT with a negative, huge, non-numeric or decorated size, or a bad argument: 521 5.5.4 and closed; its bytes are never commands", () =>
      Effect.gen(function*() {
        const { s, rec } = yield* hostileTarget(net)
        const smuggled = "RCPT TO:<victim@example.com>\r\n"
        const lines = [
          ...["-1", "9999999999999999", "abc", "1e3", "0x10", "+5", "5.0", "", "١٢"].map((size) => `BDAT ${size}`),
          `BDAT ${smuggled.length} LAST extra`,
          `BDAT  ${smuggled.length}  FIRST`,
          `bdat\t${smuggled.length}\tNOT-LAST`
        ]
        for (const line of lines) {
          const p = yield* s.open()
          yield* envelope(p)
          yield* p.write(`${line}\r\n${smuggled}NOOP\r\n`)
          assert.deepStrictEqual(yield* replies(p, 1), ["521 5.5.4"], line)
          assert.isTrue(yield* p.closed)
        }
        assert.notInclude(rec.events, "rcpt:victim@example.com")
        yield* Effect.scoped(servesNormally(s, rec))
      }))

    it.live("AUTH with bad base64: 501 5.5.2 for the initial response and for a reply to a challenge", () =>
      Effect.gen(function*() {
        const { s, rec } = yield* hostileTarget(net)
        const p = yield* s.open()
        yield* p.command("EHLO c.example")
        assert.strictEqual(show(yield* p.command("AUTH PLAIN !!!!")), "501 5.5.2")
        assert.strictEqual(show(yield* p.command("AUTH PLAIN a===")), "501 5.5.2")
        assert.strictEqual(show(yield* p.command("AUTH LOGIN")), "334")
        assert.strictEqual(show(yield* p.command("not base64 at all")), "501 5.5.2")
        assert.strictEqual(show(yield* p.command("AUTH LOGIN")), "334")
        assert.strictEqual(show(yield* p.command("*")), "501 5.0.0")
        assert.strictEqual(rec.sessions[0]!.authenticatedAs(), undefined)
        // Still able to authenticate properly afterwards.
        const plain = Buffer.from("\0user\0pass").toString("base64")
        assert.strictEqual(show(yield* p.command(`AUTH PLAIN ${plain}`)), "235 2.7.0")
      }))

    it.live("invalid UTF-8: echoed safely after EHLO, refused in an address as a syntax error (501 5.1.x)", () =>
      Effect.gen(function*() {
        const { s, rec } = yield* hostileTarget(net, { extensions: {} })
        const p = yield* s.open()
        yield* p.write(fromLatin1("EHLO \xff\xfe.example\r\n"))
        assert.strictEqual((yield* p.reply).code, 250)
        yield* p.write(fromLatin1("MAIL FROM:<\xff@b.example>\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<\xff\xfe@d.example>\r\nNOOP \xff\r\n"))
        assert.deepStrictEqual(yield* replies(p, 4), ["501 5.1.7", "250 2.1.0", "501 5.1.3", "250 2.0.0"])
        assert.deepStrictEqual(rec.events.filter((e) => e.startsWith("mail:") || e.startsWith("rcpt:")), ["mail:a@b.example"])
      }))

    it.live("pathological addresses: refused with 501 5.1.x quickly, the connection goes on", () =>
      Effect.gen(function*() {
        const { s, rec } = yield* hostileTarget(net, { maxLineLength: 1_000_000 })
        const p = yield* s.open()
        yield* p.command("EHLO c.example")
        const paths = [
          `<"${"\\\"".repeat(100_000)}"@example.com>`,
          `<${"<".repeat(100_000)}a@b.example${">".repeat(100_000)}>`,
          `<a@${"[".repeat(100_000)}>`,
          `<a@${"x.".repeat(100_000)}example>`,
          `<${"\"\"".repeat(100_000)}@b.example>`
        ]
        const started = Date.now()
        for (const path of paths) {
          const r = yield* p.command(`MAIL FROM:${path}`)
          assert.strictEqual(r.code, 501)
          assert.match(r.enhancedCode?.join(".") ?? "", /^5\.1\.\d$/)
        }
        assert.isBelow(Date.now() - started, 5_000)
        assert.notInclude(rec.events.join(), "mail:")
        assert.strictEqual(show(yield* p.command("MAIL FROM:<a@b.example>")), "250 2.1.0")
      }))

    it.live("10,000 parameters on one MAIL line: one reply, in linear time", () =>
      Effect.gen(function*() {
        const { s, rec } = yield* hostileTarget(net, { maxLineLength: 1_000_000 })
        const p = yield* s.open()
        yield* p.command("EHLO c.example")
        const started = Date.now()
        const unknown = Array.from({ length: 10_000 }, (_, i) => ` X-P${i}=1`).join("")
        assert.strictEqual(show(yield* p.command(`MAIL FROM:<a@b.example>${unknown}`)), "555 5.5.4")
        assert.strictEqual(show(yield* p.command(`MAIL FROM:<a@b.example>${" X-UNKNOWN=1".repeat(10_000)}`)), "501 5.5.4")
        assert.strictEqual(show(yield* p.command(`MAIL FROM:<a@b.example>${" SIZE=1".repeat(10_000)}`)), "501 5.5.4")
        assert.strictEqual(show(yield* p.command(`MAIL FROM:<a@b.example>${" BODY=8BITMIME".repeat(10_000)}`)), "501 5.5.4")
        assert.isBelow(Date.now() - started, 5_000)
        assert.notInclude(rec.events.join(), "mail:")
      }))
  })
})
