/**
 * Edges where a server could lose a message, a reply or a socket: malformed BDAT, LMTP
 * backends that answer for too few recipients, final replies on a closing connection, and
 * implicit-TLS clients that never finish their handshake.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as net from "node:net"
import * as Sasl from "../../src/Sasl.ts"
import { SmtpError } from "../../src/SmtpError.ts"
import * as Metrics from "../../src/internal/server/Metrics.ts"
import { testCerts } from "../support/certs.ts"
import { makeBackend } from "../support/backend.ts"
import { dialog, drained, envelope, loopback, type Net, replies, show, start, type StartOptions, waitFor } from "../support/server.ts"
import { recordingTracer } from "../support/observe.ts"

describe.each<Net>(["memory", "tcp"])("robustness over %s", (network) => {
  it.live("a malformed BDAT (its chunk cannot be framed): 521 5.5.4 and the connection closes; its bytes never run as commands", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: network, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      const smuggled = "RCPT TO:<victim@example.com>\r\n"
      yield* p.write(`BDAT ${smuggled.length} NOT-LAST\r\n${smuggled}NOOP\r\n`)
      assert.deepStrictEqual(yield* replies(p, 1), ["521 5.5.4"])
      assert.isTrue(yield* p.closed)
      assert.notInclude(rec.events, "rcpt:victim@example.com")
      assert.strictEqual(rec.messages.length, 0)
    }))

  it.live("LMTP: a recipient the backend gave no status for gets 451, not a delivery", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({
        lmtpData: (body) => Effect.as(Stream.runDrain(body), [undefined])
      })
      const s = yield* start({ net: network, backend: layer, protocol: "lmtp" })
      const p = yield* s.open()
      yield* envelope(p, ["one@example.com", "two@example.com"], "LHLO client.example")
      yield* dialog(p, "DATA")
      yield* p.write("Subject: x\r\n\r\nbody\r\n.\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "451 4.3.0"])
    }))

  it.live("LMTP: refusals after the body are outcomes, not protocol errors — every recipient gets its reply", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend({
        lmtpData: (body, recipients) =>
          Effect.as(Stream.runDrain(body), recipients.map((_, i) => i < 21 ? SmtpError.of(452, [4, 2, 2], "Mailbox full") : undefined))
      })
      const s = yield* start({ net: network, backend: layer, protocol: "lmtp" })
      const p = yield* s.open()
      const rcpts = Array.from({ length: 25 }, (_, i) => `user${i}@example.com`)
      yield* envelope(p, rcpts, "LHLO client.example")
      yield* dialog(p, "DATA")
      yield* p.write("Subject: x\r\n\r\nbody\r\n.\r\n")
      const got = yield* replies(p, 25)
      assert.deepStrictEqual(got, [...Array(21).fill("452 4.2.2"), ...Array(4).fill("250 2.0.0")])
      assert.strictEqual(show(yield* p.command("NOOP")), "250 2.0.0")
    }))

  it.live("AUTH= from a client that has not authenticated reaches the backend as AUTH=<>", () =>
    Effect.gen(function*() {
      const auth = Sasl.serverMechanisms({ password: Sasl.passwordVerifier(() => Effect.succeed(undefined)) })
      const { layer, rec } = makeBackend({ auth })
      const s = yield* start({ net: network, backend: layer, allowInsecureAuth: true })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      assert.strictEqual(show(yield* p.command("MAIL FROM:<a@example.com> AUTH=ceo@example.com")), "250 2.1.0")
      assert.strictEqual(rec.mailOptions[0]!.auth, null)
    }))

  it.live("a BDAT whose arguments are separated by tabs has its bytes read as the chunk", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: network, backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      yield* p.write("BDAT\t6\tLAST\r\nNOOP\r\nRSET\r\n")
      assert.deepStrictEqual(yield* replies(p, 2), ["250 2.0.0", "250 2.0.0"])
      // The 6 bytes "NOOP\r\n" were the message, not a command.
      assert.strictEqual(rec.messages[0]!.body, "NOOP\r\n")
      assert.strictEqual(s.tap.writes.join("").match(/^250 2\.0\.0 OK\r\n/gm)?.length ?? 0, 1)
    }))

  it.live("a read timeout still delivers the replies queued before it (an acknowledged message)", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: network, backend: layer, timeouts: { command: "300 millis", data: "300 millis" } })
      const p = yield* s.open()
      // The empty message is stored; the next BDAT's byte never comes.
      yield* p.write("EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 0 LAST\r\nBDAT 1\r\n")
      assert.deepStrictEqual(yield* replies(p, 5), ["250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "421 4.4.2"])
      assert.strictEqual(rec.messages.length, 1)
    }))

  it.live("under SMTPUTF8, an address with invalid UTF-8 is refused, not mangled", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend()
      const s = yield* start({ net: network, backend: layer, extensions: { smtputf8: true } })
      const p = yield* s.open()
      yield* p.command("EHLO c")
      yield* p.write(new Uint8Array([...Buffer.from("MAIL FROM:<"), 0xff, ...Buffer.from("@b.example> SMTPUTF8\r\n")]))
      const r = yield* p.reply
      assert.isAtLeast(r.code, 500)
      assert.deepStrictEqual(rec.mailOptions, [])
    }))

  it.live("the line limit counts bytes on the wire, also for invalid UTF-8", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net: network, backend: layer, maxLineLength: 512 })
      const p = yield* s.open()
      yield* p.write(new Uint8Array([...Buffer.from("NOOP "), ...new Uint8Array(200).fill(0xff), 13, 10]))
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
    }))

  it.live("time the backend takes between reads of the body is not charged to the client", () =>
    Effect.gen(function*() {
      const { layer, rec } = makeBackend({
        data: (body) =>
          body.pipe(Stream.runForEach(() => Effect.sleep("150 millis")), Effect.tap(() => Effect.sync(() => void rec.events.push("stored"))))
      })
      const s = yield* start({ net: network, backend: layer, timeouts: { data: "500 millis" } })
      const p = yield* s.open()
      yield* envelope(p)
      yield* dialog(p, "DATA")
      for (let i = 0; i < 5; i++) yield* p.write(`line ${i}\r\n`)
      yield* p.write(".\r\n")
      assert.strictEqual(show(yield* p.reply), "250 2.0.0")
      assert.include(rec.events, "stored")
    }))

  it.live("VRFY answers 252 2.5.0 by default, and a configured reply with its own code", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const plain = yield* start({ net: network, backend: layer })
      const p = yield* plain.open()
      assert.strictEqual(show(yield* p.command("VRFY postmaster")), "252 2.5.0")
      const custom = yield* start({
        net: network,
        backend: layer,
        vrfyReply: { code: 502, text: "VRFY disabled" }
      })
      const q = yield* custom.open()
      const r = yield* q.command("VRFY postmaster")
      assert.strictEqual(show(r), "502 5.0.0")
      assert.strictEqual(r.text, "VRFY disabled")
    }))

  it.live("failed AUTH attempts are counted in the metrics", () =>
    Effect.gen(function*() {
      const auth = Sasl.serverMechanisms({
        password: Sasl.passwordVerifier((user) => Effect.succeed(user === "u" ? undefined : undefined))
      })
      const { layer } = makeBackend({ auth })
      const s = yield* start({ net: network, backend: layer, allowInsecureAuth: true })
      const before = (yield* Metric.value(Metrics.authFailures)).count
      const p = yield* s.open()
      yield* p.command("EHLO c")
      const r = yield* p.command(`AUTH PLAIN ${Buffer.from("\0u\0nope").toString("base64")}`)
      assert.strictEqual(show(r), "535 5.7.8")
      const after = (yield* Metric.value(Metrics.authFailures)).count
      assert.strictEqual(after - before, 1)
    }))
})

describe("tracing", () => {
  it.live("with a tracer installed, backend calls run inside the transaction and connection spans", () =>
    Effect.gen(function*() {
      const chains: Array<Array<string>> = []
      const chainOf = Effect.map(Effect.currentSpan, (span) => {
        const names: Array<string> = []
        let current: Tracer.AnySpan | undefined = span
        while (current !== undefined) {
          if (current._tag === "Span") names.push(current.name)
          current = current._tag === "Span" && current.parent._tag === "Some" ? current.parent.value : undefined
        }
        return names
      })
      const { layer } = makeBackend({
        mail: () => Effect.map(chainOf, (c) => void chains.push(c)),
        data: (body) => Effect.andThen(Stream.runDrain(body), Effect.map(chainOf, (c) => void chains.push(c)))
      })
      const ended: Array<string> = []
      const tracer = recordingTracer(ended)
      const s = yield* Effect.withTracer(start({ backend: layer }), tracer)
      const p = yield* s.open()
      yield* envelope(p)
      yield* dialog(p, "DATA")
      yield* p.command("Subject: x\r\n\r\nbody\r\n.")
      assert.deepStrictEqual(chains[0]!.slice(0, 1), ["smtp.connection"])
      assert.deepStrictEqual(chains[1]!.slice(0, 2), ["smtp.transaction", "smtp.connection"])
      assert.deepStrictEqual(ended, ["smtp.transaction"])
      yield* p.command("QUIT")
      yield* waitFor(() => ended.length === 2)
      assert.deepStrictEqual(ended, ["smtp.transaction", "smtp.connection"])
    }))

  it.live("without a tracer, no span is made: backend calls see none", () =>
    Effect.gen(function*() {
      const seen: Array<boolean> = []
      const { layer } = makeBackend({
        mail: () => Effect.map(Effect.option(Effect.currentSpan), (span) => void seen.push(span._tag === "Some"))
      })
      const s = yield* start({ backend: layer })
      const p = yield* s.open()
      yield* envelope(p)
      assert.deepStrictEqual(seen, [false])
    }))
})

/** A server with one implicit-TLS listener over real TCP; its port. */
const implicitTlsPort = (options: Omit<StartOptions, "backend">) =>
  Effect.gen(function*() {
    const certs = testCerts()
    const s = yield* start({
      net: "tcp",
      backend: makeBackend().layer,
      listen: [{ endpoint: loopback, implicitTls: true }],
      tls: { key: certs.server.key, cert: certs.server.cert },
      ...options
    })
    return s.endpoint._tag === "Tcp" ? s.endpoint.port : 0
  })

describe("closing over real TCP", () => {
  it.live("the 500 for an over-long line survives the close, even when the client reads late", () =>
    Effect.gen(function*() {
      const { layer } = makeBackend()
      const s = yield* start({ net: "tcp", backend: layer, maxLineLength: 100 })
      const port = s.endpoint._tag === "Tcp" ? s.endpoint.port : 0
      const socket = net.connect(port, "127.0.0.1")
      socket.pause() // read nothing until the server is done with the connection
      socket.on("error", () => {})
      // More than the socket buffers hold: the server must keep reading after its 500 for this
      // write to complete at all.
      const writeError = yield* Effect.promise(() =>
        new Promise<Error | null | undefined>((resolve) => socket.write("NOOP " + "x".repeat(8 * 1024 * 1024) + "\r\n", resolve))
      )
      assert.isNotOk(writeError, `the server reset the connection: ${writeError?.message}`)
      // Most of that line was still unread when the server gave up on it. Destroying a socket
      // with unread input sends a reset, and a reset makes the client's kernel drop the replies
      // it had not yet handed to the client.
      yield* drained(s)
      const received = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          let text = ""
          socket.setEncoding("latin1")
          socket.on("data", (d: string) => (text += d))
          socket.on("error", () => resolve(text))
          socket.on("close", () => resolve(text))
          socket.resume()
        })
      )
      assert.match(received, /^220 [^\r]*\r\n500 5\.5\.2 Line too long\r\n/)
    }))

  it.live("clients stuck in an implicit-TLS handshake count against maxConnections", () =>
    Effect.gen(function*() {
      const port = yield* implicitTlsPort({ maxConnections: 2 })
      const closed: Array<number> = []
      const sockets = [0, 1, 2].map((i) => {
        const socket = net.connect(port, "127.0.0.1")
        socket.on("error", () => {})
        socket.on("close", () => closed.push(i))
        return socket
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => sockets.forEach((x) => x.destroy())))
      // One over the limit while two handshakes are pending: it is closed at once, the others wait.
      yield* waitFor(() => closed.length > 0)
      assert.strictEqual(closed.length, 1)
    }))

  it.live("an implicit-TLS client that never sends its ClientHello is dropped after the handshake timeout", () =>
    Effect.gen(function*() {
      const port = yield* implicitTlsPort({ timeouts: { tlsHandshake: "300 millis" } })
      const started = Date.now()
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const socket = net.connect(port, "127.0.0.1")
          socket.on("error", () => resolve())
          socket.on("close", () => resolve())
        })
      )
      // Closed by the server (well before Node's own 120 s default).
      assert.isBelow(Date.now() - started, 10_000)
    }))
})
