/**
 * `effect-smtp serve` as users run it: a child process driven over TCP, TLS and Unix sockets.
 */
import { afterAll, afterEach, assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as NodeTransport from "../../src/NodeTransport.ts"
import type { Endpoint } from "../../src/Transport.ts"
import * as Cli from "../support/cli.ts"
import { testCerts } from "../support/certs.ts"
import * as Wire from "../support/wire.ts"

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "effect-smtp-cli-"))
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }))

const running: Array<Cli.Running> = []
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop("SIGKILL")))
})

const serve = async (args: ReadonlyArray<string>, listeners = 1) => {
  const maildir = fs.mkdtempSync(path.join(tmp, "md-"))
  const r = Cli.start(["serve", "--maildir", maildir, ...args])
  running.push(r)
  for (let i = 0; i < listeners; i++) await r.waitFor((e) => e.event === "listening" && r.events.indexOf(e) === i)
  const listening = r.events.filter((e) => e.event === "listening")
  return { r, maildir, listening }
}

const endpointOf = (address: string): Endpoint => address.startsWith("unix:")
  ? { _tag: "Unix", path: address.slice(5) }
  : { _tag: "Tcp", host: address.slice(0, address.lastIndexOf(":")), port: Number(address.slice(address.lastIndexOf(":") + 1)) }

/** Runs a conversation against `address`; returns the codes of every reply after the greeting. */
const talk = (address: string, f: (p: Wire.Peer) => Effect.Effect<void, unknown>, tls?: { ca: string }) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const p = yield* Wire.connect({
      endpoint: endpointOf(address),
      ...(tls ? { tls: { ca: tls.ca, servername: "localhost" } } : {})
    })
    assert.strictEqual((yield* p.reply).code, 220)
    yield* f(p)
  })).pipe(Effect.provide(NodeTransport.layer)))

const expectCode = (p: Wire.Peer, line: string, code: number, enhanced?: string) =>
  Effect.gen(function*() {
    const r = yield* p.command(line)
    assert.strictEqual(r.code, code, `${line} -> ${r.code} ${r.text}`)
    if (enhanced !== undefined) assert.strictEqual(r.enhancedCode?.join("."), enhanced)
    return r
  })

const message = "Subject: test\r\n\r\n..leading dot\r\nbody\r\n"

describe("effect-smtp serve", () => {
  it("stores a message as exact bytes and reports it", async () => {
    const { r, maildir, listening } = await serve(["--listen", "127.0.0.1:0"])
    assert.deepStrictEqual(Object.keys(listening[0]!).sort(), ["address", "event", "protocol", "tls"])
    assert.strictEqual(listening[0]!.protocol, "smtp")
    assert.strictEqual(listening[0]!.tls, "none")
    const address = listening[0]!.address as string
    await talk(address, (p) =>
      Effect.gen(function*() {
        yield* expectCode(p, "EHLO client.test", 250)
        yield* expectCode(p, "MAIL FROM:<sender@example.com> BODY=8BITMIME", 250)
        yield* expectCode(p, "RCPT TO:<one@example.com>", 250)
        yield* expectCode(p, "RCPT TO:<two@example.com>", 250)
        yield* expectCode(p, "DATA", 354)
        yield* expectCode(p, message + ".", 250, "2.0.0")
        yield* expectCode(p, "QUIT", 221)
      }))
    const received = await r.waitFor((e) => e.event === "received")
    assert.strictEqual(received.from, "sender@example.com")
    assert.deepStrictEqual(received.to, ["one@example.com", "two@example.com"])
    assert.strictEqual(received.helo, "client.test")
    assert.strictEqual(received.tls, false)
    assert.strictEqual(received.auth, null)
    assert.strictEqual(received.body, "8BITMIME")
    assert.strictEqual(received.smtputf8, false)
    const stored = fs.readFileSync(received.path as string, "utf8")
    assert.strictEqual(stored, "Subject: test\r\n\r\n.leading dot\r\nbody\r\n")
    assert.strictEqual(received.bytes, Buffer.byteLength(stored))
    assert.strictEqual(path.dirname(received.path as string), path.join(maildir, "new"))
    assert.deepStrictEqual(fs.readdirSync(path.join(maildir, "tmp")), [])
  })

  it("--trace logs every command and reply on stderr, AUTH data redacted, the message as a byte count", async () => {
    const { r, listening } = await serve(["--listen", "127.0.0.1:0", "--trace", "--auth", "user:hunter22", "--allow-insecure-auth"])
    const plain = Buffer.from("\0user\0hunter22").toString("base64")
    await talk(listening[0]!.address as string, (p) =>
      Effect.gen(function*() {
        yield* expectCode(p, "EHLO client.test", 250)
        yield* expectCode(p, `AUTH PLAIN ${plain}`, 235)
        yield* expectCode(p, "MAIL FROM:<sender@example.com>", 250)
        yield* expectCode(p, "RCPT TO:<one@example.com>", 250)
        yield* expectCode(p, "DATA", 354)
        yield* expectCode(p, message + ".", 250)
        yield* expectCode(p, "QUIT", 221)
      }))
    await r.waitFor((e) => e.event === "received")
    const stderr = r.stderr()
    for (const seen of ["EHLO client.test", "AUTH PLAIN <redacted>", "235 2.7.0 Authentication successful", "MAIL FROM:<sender@example.com>", `<message: ${message.length - 1} bytes>`, "221 2.0.0"]) {
      assert.include(stderr, seen)
    }
    assert.notInclude(stderr, plain)
    assert.notInclude(stderr, "hunter22")
  })

  it("injects faults at MAIL, RCPT and DATA", async () => {
    const { r, listening } = await serve([
      "--listen", "127.0.0.1:0",
      "--fault", "mail:^spammer@=550 5.7.1 Go away",
      "--fault", "rcpt:^nobody@=550 5.1.1 No such user",
      "--fault", "data:^full@=452 4.2.2 Mailbox full"
    ])
    await talk(listening[0]!.address as string, (p) =>
      Effect.gen(function*() {
        yield* expectCode(p, "EHLO client.test", 250)
        const refused = yield* expectCode(p, "MAIL FROM:<spammer@example.com>", 550, "5.7.1")
        assert.strictEqual(refused.text, "Go away")
        yield* expectCode(p, "MAIL FROM:<ok@example.com>", 250)
        const nobody = yield* expectCode(p, "RCPT TO:<nobody@example.com>", 550, "5.1.1")
        assert.strictEqual(nobody.text, "No such user")
        yield* expectCode(p, "RCPT TO:<full@example.com>", 250)
        yield* expectCode(p, "DATA", 354)
        yield* expectCode(p, message + ".", 452, "4.2.2")
      }))
    assert.isFalse(r.events.some((e) => e.event === "received"))
  })

  it("LMTP over a Unix socket gives one reply per recipient", async () => {
    const socket = path.join(tmp, `lmtp-${process.pid}.sock`)
    const { r, listening } = await serve(["--lmtp", "--listen", `unix:${socket}`, "--fault", "data:^full@=452 4.2.2 Mailbox full"])
    assert.strictEqual(listening[0]!.protocol, "lmtp")
    assert.strictEqual(listening[0]!.address, `unix:${socket}`)
    await talk(`unix:${socket}`, (p) =>
      Effect.gen(function*() {
        yield* expectCode(p, "EHLO client.test", 500)
        yield* expectCode(p, "LHLO client.test", 250)
        yield* expectCode(p, "MAIL FROM:<a@example.com>", 250)
        yield* expectCode(p, "RCPT TO:<one@example.com>", 250)
        yield* expectCode(p, "RCPT TO:<full@example.com>", 250)
        yield* expectCode(p, "DATA", 354)
        yield* p.write(message + ".\r\n")
        assert.strictEqual((yield* p.reply).code, 250)
        const second = yield* p.reply
        assert.strictEqual(second.code, 452)
        assert.strictEqual(second.enhancedCode?.join("."), "4.2.2")
      }))
    const received = await r.waitFor((e) => e.event === "received")
    assert.deepStrictEqual(received.to, ["one@example.com"])
  })

  it("a Unix socket with --unix-mode and --unix-owner; an unknown owner is a clear error", async () => {
    const socket = path.join(tmp, `owned-${process.pid}.sock`)
    await serve(["--lmtp", "--listen", `unix:${socket}`, "--unix-owner", "nobody", "--unix-mode", "0640"])
    const stat = fs.lstatSync(socket)
    assert.deepStrictEqual([stat.isSocket(), stat.mode & 0o7777, stat.uid], [true, 0o640, 65534])
    const other = path.join(tmp, `unknown-${process.pid}.sock`)
    const { code, stderr } = await Cli.run(["serve", "--listen", `unix:${other}`, "--unix-owner", "no-such-user-here"])
    assert.strictEqual(code, 1)
    assert.include(stderr, `cannot listen on unix:${other}: unknown user "no-such-user-here"`)
    assert.isFalse(fs.existsSync(other))
  })

  it("STARTTLS with a self-signed certificate, and AUTH", async () => {
    const { r, listening } = await serve(["--listen", "127.0.0.1:0", "--tls-self-signed", "--auth", "alice:s3cret"])
    assert.strictEqual(listening[0]!.tls, "starttls")
    await talk(listening[0]!.address as string, (p) =>
      Effect.gen(function*() {
        const ehlo = yield* expectCode(p, "EHLO client.test", 250)
        assert.include(ehlo.lines, "STARTTLS")
        assert.isFalse(ehlo.lines.some((l) => l.startsWith("AUTH")), "no AUTH before TLS")
        yield* expectCode(p, "STARTTLS", 220)
        yield* p.transport.upgradeTls({ role: "client", tls: { rejectUnauthorized: false, servername: "localhost" } })
        const wire = Wire.peer(p.transport)
        const secure = yield* expectCode(wire, "EHLO client.test", 250)
        assert.isFalse(secure.lines.includes("STARTTLS"))
        assert.isTrue(secure.lines.some((l) => l.startsWith("AUTH ") && l.includes("PLAIN")))
        const bad = Buffer.from("\0alice\0wrong").toString("base64")
        yield* expectCode(wire, `AUTH PLAIN ${bad}`, 535, "5.7.8")
        const good = Buffer.from("\0alice\0s3cret").toString("base64")
        yield* expectCode(wire, `AUTH PLAIN ${good}`, 235)
        yield* expectCode(wire, "MAIL FROM:<alice@example.com>", 250)
        yield* expectCode(wire, "RCPT TO:<bob@example.com>", 250)
        yield* expectCode(wire, "DATA", 354)
        yield* expectCode(wire, message + ".", 250)
      }))
    const received = await r.waitFor((e) => e.event === "received")
    assert.strictEqual(received.tls, true)
    assert.strictEqual(received.auth, "alice")
    assert.notInclude(r.stderr(), "s3cret")
  })

  it("implicit TLS with given certificates", async () => {
    const certs = testCerts()
    const dir = fs.mkdtempSync(path.join(tmp, "tls-"))
    fs.writeFileSync(path.join(dir, "cert.pem"), certs.server.cert)
    fs.writeFileSync(path.join(dir, "key.pem"), certs.server.key)
    const { listening } = await serve([
      "--listen", "127.0.0.1:0",
      "--tls-listen", "127.0.0.1:0",
      "--tls-cert", path.join(dir, "cert.pem"),
      "--tls-key", path.join(dir, "key.pem")
    ], 2)
    const implicit = listening.find((l) => l.tls === "implicit")!
    assert.isDefined(implicit)
    await talk(implicit.address as string, (p) =>
      Effect.gen(function*() {
        const ehlo = yield* expectCode(p, "EHLO client.test", 250)
        assert.isFalse(ehlo.lines.includes("STARTTLS"))
        assert.isDefined(p.transport.tls())
      }), { ca: certs.ca })
  })

  it("--greeting-delay refuses a client that talks first and greets one that waits", async () => {
    const { listening } = await serve(["--listen", "127.0.0.1:0", "--greeting-delay", "400ms"])
    const endpoint = endpointOf(listening[0]!.address as string)
    const conversation = <A>(f: (p: Wire.Peer) => Effect.Effect<A, unknown>) =>
      Effect.runPromise(Effect.scoped(Effect.flatMap(Wire.connect({ endpoint }), f)).pipe(Effect.provide(NodeTransport.layer)))
    const early = await conversation((p) =>
      Effect.gen(function*() {
        const refusal = yield* p.command("EHLO hasty.test")
        return { refusal, closed: yield* p.closed }
      }))
    assert.strictEqual(early.refusal.code, 554, "no greeting: the refusal is the first reply")
    assert.strictEqual(early.refusal.enhancedCode?.join("."), "5.5.0")
    assert.isTrue(early.closed)
    const patient = await conversation((p) =>
      Effect.gen(function*() {
        const started = Date.now()
        const greeting = yield* p.reply
        const waited = Date.now() - started
        return { greeting, waited, ehlo: yield* p.command("EHLO patient.test") }
      }))
    assert.strictEqual(patient.greeting.code, 220)
    assert.isAtLeast(patient.waited, 300, "the greeting came after the delay")
    assert.strictEqual(patient.ehlo.code, 250)
  })

  it("answers 421 to connected clients on SIGTERM and exits 0", async () => {
    const { r, listening } = await serve(["--listen", "127.0.0.1:0"])
    const result = Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const p = yield* Wire.connect({ endpoint: endpointOf(listening[0]!.address as string) })
      assert.strictEqual((yield* p.reply).code, 220)
      yield* expectCode(p, "EHLO client.test", 250)
      yield* Effect.sync(() => r.child.kill("SIGTERM"))
      return yield* p.reply
    })).pipe(Effect.provide(NodeTransport.layer)))
    const reply = await result
    assert.strictEqual(reply.code, 421)
    assert.strictEqual(reply.enhancedCode?.join("."), "4.3.2")
    assert.strictEqual(await r.exited, 0)
  })

  it("refuses bad flags with a usage error and exit code 2", async () => {
    for (
      const args of [
        ["serve", "--no-such-flag"],
        ["serve", "--fault", "nonsense"],
        ["serve", "--fault", "rcpt:(=550 bad regex"],
        ["serve", "--listen", "not-an-address"],
        ["serve", "--tls-listen", "127.0.0.1:0"],
        ["serve", "--read-timeout", "soon"],
        ["serve", "--greeting-delay", "later"],
        ["serve", "--bare-lf", "sometimes"],
        ["serve", "--auth", "nopassword"],
        ["serve", "--unix-mode", "0660"],
        ["serve", "--listen", "unix:/tmp/x.sock", "--unix-mode", "rw-rw----"]
      ]
    ) {
      const { code, stderr } = await Cli.run(args)
      assert.strictEqual(code, 2, `${args.join(" ")}: ${stderr}`)
      assert.isAbove(stderr.length, 0, `${args.join(" ")} prints why`)
    }
  })
})
