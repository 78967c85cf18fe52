import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as NodeTransport from "../src/NodeTransport.ts"
import { type Endpoint, Network, type Transport, type TransportError } from "../src/Transport.ts"
import { testCerts } from "./support/certs.ts"
import { readLine } from "./support/observe.ts"

const certs = testCerts()
const serverTls = { key: certs.server.key, cert: certs.server.cert }
const loopback = (port = 0): Endpoint => ({ _tag: "Tcp", host: "127.0.0.1", port })
const text = (b: Uint8Array) => new TextDecoder().decode(b)

const concat = (chunks: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0))
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

/** Reads until `n` bytes arrived (or EOF). */
const readBytes = (t: Transport, n: number) =>
  Effect.gen(function*() {
    const chunks: Array<Uint8Array> = []
    let got = 0
    while (got < n) {
      const c = yield* t.read
      if (c === undefined) break
      chunks.push(c)
      got += c.length
    }
    return concat(chunks)
  })


const readToEof = (t: Transport) =>
  Effect.gen(function*() {
    const chunks: Array<Uint8Array> = []
    while (true) {
      const c = yield* t.read
      if (c === undefined) return concat(chunks)
      chunks.push(c)
    }
  })

const payload = (size: number, seed: number) => {
  const b = new Uint8Array(size)
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed + (i >>> 13)) & 0xff
  return b
}
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex")

/** Writes in 64 KiB pieces, as a protocol layer would. */
const writeAll = (t: Transport, data: Uint8Array) =>
  Effect.gen(function*() {
    for (let at = 0; at < data.length; at += 65536) yield* t.write(data.subarray(at, at + 65536))
  })

const reasonOf = <A>(exit: Exit.Exit<A, TransportError>): string | undefined =>
  Exit.isFailure(exit) ? exit.cause.reasons.map((r) => r._tag === "Fail" ? r.error.reason : r._tag).join(",") : undefined

const failureOf = <A>(exit: Exit.Exit<A, TransportError>): TransportError | undefined => {
  if (!Exit.isFailure(exit)) return undefined
  for (const r of exit.cause.reasons) if (r._tag === "Fail") return r.error
  return undefined
}

/**
 * Writes until one write stays pending (Node's buffer and both kernel buffers are full) while
 * the reader does not pull; then the reader pulls everything and the write completes.
 */
const backpressure = (client: Transport, server: Transport) =>
  Effect.gen(function*() {
    const chunk = payload(256 * 1024, 3)
    let written = 0
    let blocked: Fiber.Fiber<void, TransportError> | undefined
    while (blocked === undefined) {
      const w = yield* Effect.forkChild(client.write(chunk), { startImmediately: true })
      let done = yield* Fiber.await(w).pipe(Effect.timeoutOption("300 millis"))
      // Still pending after a second look: blocked for good (not just a slow machine).
      if (Option.isNone(done)) done = yield* Fiber.await(w).pipe(Effect.timeoutOption("300 millis"))
      if (Option.isNone(done)) blocked = w
      else {
        assert.isTrue(Exit.isSuccess(done.value))
        written += chunk.length
      }
      assert.isBelow(written, 64 * 1024 * 1024, "the writer never blocked: reads are not on demand")
    }
    assert.isAbove(written, 0)
    assert.isUndefined(blocked.pollUnsafe())
    const total = written + chunk.length
    const received = yield* Effect.forkChild(readBytes(server, total), { startImmediately: true })
    yield* Fiber.join(blocked)
    assert.strictEqual((yield* Fiber.join(received)).length, total)
  })

/** A listener plus one accepted connection and the client's end of it. */
const connectedPair = (
  listen: Parameters<typeof NodeTransport.listen>[0] = { endpoint: loopback() },
  connect?: Partial<Parameters<typeof NodeTransport.connect>[0]>
) =>
  Effect.gen(function*() {
    const listener = yield* NodeTransport.listen(listen)
    const client = yield* NodeTransport.connect({ endpoint: listener.endpoint, ...connect })
    const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
    return { listener, client, server }
  })

/** A path for a Unix socket, short enough for sun_path (108 bytes). */
const socketPath = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), "smtp-")), "s.sock")

describe("NodeTransport over TCP", () => {
  it.live("round-trips several MB each way and reports both endpoints", () =>
    Effect.gen(function*() {
      const { client, listener, server } = yield* connectedPair()
      assert.strictEqual(listener.endpoint._tag, "Tcp")
      assert.notStrictEqual(listener.endpoint._tag === "Tcp" && listener.endpoint.port, 0)
      assert.deepStrictEqual(server.localEndpoint, listener.endpoint)
      assert.deepStrictEqual(client.remoteEndpoint, listener.endpoint)
      assert.deepStrictEqual(server.remoteEndpoint, client.localEndpoint)
      assert.strictEqual(client.tls(), undefined)

      const up = payload(8 * 1024 * 1024, 1)
      const down = payload(6 * 1024 * 1024 + 13, 2)
      const [received, , echoed] = yield* Effect.all([
        readBytes(server, up.length),
        writeAll(client, up),
        readBytes(client, down.length),
        writeAll(server, down)
      ], { concurrency: "unbounded" })
      assert.strictEqual(received.length, up.length)
      assert.strictEqual(sha256(received), sha256(up))
      assert.strictEqual(echoed.length, down.length)
      assert.strictEqual(sha256(echoed), sha256(down))
    }))

  it.live("accepts strings and Uint8Arrays", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* client.write("EHLO héllo\r\n")
      yield* client.write(new TextEncoder().encode("QUIT\r\n"))
      assert.strictEqual(text(yield* readBytes(server, 19)), "EHLO héllo\r\nQUIT\r\n")
    }))

  it.live("EOF: read gives undefined after the peer's close, and again after that", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* client.write("bye\r\n")
      yield* client.close
      assert.strictEqual(text(yield* readToEof(server)), "bye\r\n")
      assert.strictEqual(yield* server.read, undefined)
      // Our own side is closed: reads and writes fail with Closed, close stays idempotent.
      assert.strictEqual(reasonOf(yield* Effect.exit(client.read)), "Closed")
      assert.strictEqual(reasonOf(yield* Effect.exit(client.write("x"))), "Closed")
      yield* client.close
      yield* client.close
    }))

  it.live("close fails a pending read with Closed", () =>
    Effect.gen(function*() {
      const { server } = yield* connectedPair()
      const reader = yield* Effect.forkChild(server.read, { startImmediately: true })
      yield* server.close
      assert.strictEqual(reasonOf(yield* Fiber.await(reader)), "Closed")
    }))

  it.live("allows one pending read at a time; an interrupted read loses nothing", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      const first = yield* Effect.forkChild(server.read, { startImmediately: true })
      assert.strictEqual(reasonOf(yield* Effect.exit(server.read)), "Read")
      yield* Fiber.interrupt(first)
      yield* client.write("after\r\n")
      assert.strictEqual(text(yield* readBytes(server, 7)), "after\r\n")
    }))

  it.live("bytes that arrive while no read waits are kept and read later, in order", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* client.write("first\r\n")
      assert.strictEqual(yield* readLine(server), "first\r\n")
      // No read waits now: what comes is kept by the transport (or Node), not lost. There is no
      // signal for "arrived", so the test gives it time; later arrival would pass as well.
      for (const piece of ["a", "b", "c\r\n"]) {
        yield* client.write(piece)
        yield* Effect.sleep("20 millis")
      }
      assert.strictEqual(yield* readLine(server), "abc\r\n")
    }))

  it.live("backpressure: a reader that does not pull blocks the writer, pulling resumes it", () =>
    Effect.flatMap(connectedPair(), ({ client, server }) => backpressure(client, server)))

  it.live("backpressure holds over TLS too", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* Effect.all([
        server.upgradeTls({ role: "server", tls: serverTls }),
        client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost" } })
      ], { concurrency: 2 })
      yield* backpressure(client, server)
    }))

  it.live("close is bounded by its deadline when the peer never reads", () =>
    Effect.gen(function*() {
      // A raw server whose connection is never read.
      const accepted: Array<net.Socket> = []
      const raw = net.createServer({ pauseOnConnect: true }, (s) => void accepted.push(s))
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => void raw.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => { raw.close(); for (const s of accepted) s.destroy() })
      )
      const port = (raw.address() as net.AddressInfo).port
      const socket = yield* Effect.callback<net.Socket>((resume) => {
        const s = net.connect({ port, host: "127.0.0.1" }, () => resume(Effect.succeed(s)))
      })
      const t = NodeTransport.makeUnsafe(socket, "client", { closeTimeout: "200 millis" })
      const chunk = payload(1024 * 1024, 4)
      // Fill everything: the write that does not complete in time is left pending.
      while (true) {
        const w = yield* Effect.forkChild(t.write(chunk), { startImmediately: true })
        if (Option.isNone(yield* Fiber.await(w).pipe(Effect.timeoutOption("300 millis")))) break
      }
      const started = Date.now()
      yield* t.close
      assert.isBelow(Date.now() - started, 1500)
      assert.isTrue(socket.destroyed)
    }))
})

describe("NodeTransport STARTTLS", () => {
  it.live("upgrades both sides in place; TlsState has protocol, SNI and the client certificate", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* client.write("STARTTLS\r\n")
      assert.strictEqual(yield* readLine(server), "STARTTLS\r\n")
      yield* server.write("220 go ahead\r\n")
      assert.strictEqual(yield* readLine(client), "220 go ahead\r\n")
      yield* Effect.all([
        server.upgradeTls({ role: "server", tls: { ...serverTls, ca: certs.ca, requestCert: true } }),
        client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost", ...certs.client } })
      ], { concurrency: "unbounded" })

      const s = server.tls()
      const c = client.tls()
      assert.isDefined(s)
      assert.isDefined(c)
      assert.strictEqual(s.protocol, "TLSv1.3")
      assert.strictEqual(c.protocol, "TLSv1.3")
      assert.isString(s.cipher)
      assert.strictEqual(s.cipher, c.cipher)
      assert.strictEqual(s.servername, "localhost")
      assert.strictEqual(c.servername, "localhost")
      assert.isTrue(c.authorized)
      assert.strictEqual(c.authorizationError, undefined)
      assert.strictEqual(c.peerCertificate?.subject["CN"], "localhost")
      // The server asked for a client certificate and verified it against the CA.
      assert.isTrue(s.authorized)
      assert.strictEqual(s.authorizationError, undefined)
      const peer = s.peerCertificate
      assert.isDefined(peer)
      assert.strictEqual(peer.subject["CN"], "client.test")
      assert.strictEqual(peer.issuer["CN"], "effect-smtp test CA")
      assert.strictEqual(peer.subjectAltName, "DNS:client.test")
      assert.match(peer.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
      assert.isAbove(peer.raw.length, 100)

      // Encrypted both ways, large payloads too.
      const big = payload(3 * 1024 * 1024, 5)
      const [got] = yield* Effect.all([readBytes(server, big.length), writeAll(client, big)], { concurrency: 2 })
      assert.strictEqual(sha256(got), sha256(big))
      yield* server.write("250 ok\r\n")
      assert.strictEqual(yield* readLine(client), "250 ok\r\n")
      // A second upgrade is refused.
      assert.strictEqual(reasonOf(yield* Effect.exit(client.upgradeTls({ role: "client", tls: {} }))), "Tls")
      // Clean close over TLS: the peer sees EOF.
      yield* client.close
      assert.strictEqual(yield* server.read, undefined)
    }))

  it.live("without requestCert the server reports no peer certificate; the client's servername defaults to the host name", () =>
    Effect.gen(function*() {
      const listener = yield* NodeTransport.listen({ endpoint: { _tag: "Tcp", host: "localhost", port: 0 } })
      const port = listener.endpoint._tag === "Tcp" ? listener.endpoint.port : 0
      const client = yield* NodeTransport.connect({ endpoint: { _tag: "Tcp", host: "localhost", port } })
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      yield* Effect.all([
        server.upgradeTls({ role: "server", tls: serverTls }),
        client.upgradeTls({ role: "client", tls: { ca: certs.ca } })
      ], { concurrency: 2 })
      assert.strictEqual(server.tls()?.servername, "localhost")
      assert.strictEqual(server.tls()?.peerCertificate, undefined)
      assert.isFalse(server.tls()?.authorized)
      assert.isTrue(client.tls()?.authorized)
    }))

  it.live("an IP address is not sent as SNI but is checked against the certificate's IP SANs", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* Effect.all([
        server.upgradeTls({ role: "server", tls: serverTls }),
        client.upgradeTls({ role: "client", tls: { ca: certs.ca } })
      ], { concurrency: 2 })
      assert.strictEqual(server.tls()?.servername, undefined)
      assert.isTrue(client.tls()?.authorized)
    }))

  it.live("a client that does not trust the CA fails with Tls on both sides; nothing crashes", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      const [s, c] = yield* Effect.all([
        Effect.exit(server.upgradeTls({ role: "server", tls: serverTls })),
        Effect.exit(client.upgradeTls({ role: "client", tls: { servername: "localhost" } }))
      ], { concurrency: 2 })
      assert.strictEqual(reasonOf(c), "Tls")
      assert.strictEqual(reasonOf(s), "Tls")
      assert.match(failureOf(c)?.message ?? "", /certificate/i)
      assert.strictEqual(client.tls(), undefined)
      assert.strictEqual(server.tls(), undefined)
      // The connections are dead, not hanging.
      assert.isDefined(reasonOf(yield* Effect.exit(server.read)))
      assert.isDefined(reasonOf(yield* Effect.exit(client.write("x"))))
      yield* Effect.all([server.close, client.close])
    }))

  it.live("a wrong host name fails the client's certificate check", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      const [s, c] = yield* Effect.all([
        Effect.exit(server.upgradeTls({ role: "server", tls: serverTls })),
        Effect.exit(client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "mx.example.org" } }))
      ], { concurrency: 2 })
      assert.strictEqual(reasonOf(c), "Tls")
      assert.strictEqual(reasonOf(s), "Tls")
    }))

  it.live("requestCert with rejectUnauthorized refuses an untrusted client certificate", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      const [s] = yield* Effect.all([
        Effect.exit(server.upgradeTls({ role: "server", tls: { ...serverTls, ca: certs.ca, requestCert: true, rejectUnauthorized: true } })),
        // TLS 1.3: the client finishes before the server has checked its certificate.
        Effect.exit(client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost", ...certs.untrusted } }))
      ], { concurrency: 2 })
      assert.strictEqual(reasonOf(s), "Tls")
      assert.match(failureOf(s)?.message ?? "", /certificate/i)
      const after = yield* Effect.exit(readToEof(client))
      assert.isTrue(Exit.isFailure(after) || (Exit.isSuccess(after) && after.value.length === 0))
    }))

  it.live("requestCert without rejectUnauthorized admits an untrusted certificate as unauthorized", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* Effect.all([
        server.upgradeTls({ role: "server", tls: { ...serverTls, ca: certs.ca, requestCert: true, rejectUnauthorized: false } }),
        client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost", ...certs.untrusted } })
      ], { concurrency: 2 })
      const s = server.tls()
      assert.isFalse(s?.authorized)
      assert.isString(s?.authorizationError)
      assert.strictEqual(s?.peerCertificate?.subject["CN"], "localhost")
    }))

  it.live("plaintext pipelined after STARTTLS never comes out of a read after the upgrade", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* client.write("STARTTLS\r\nNOOP\r\n") // one write: the server's read takes both lines
      const first = text((yield* server.read) ?? new Uint8Array())
      assert.isTrue(first.startsWith("STARTTLS\r\n"))
      // The protocol layer drops what follows STARTTLS in its own buffer ("NOOP\r\n" here).
      yield* server.write("220 go ahead\r\n")
      assert.strictEqual(yield* readLine(client), "220 go ahead\r\n")
      yield* Effect.all([
        server.upgradeTls({ role: "server", tls: serverTls }),
        client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost" } })
      ], { concurrency: 2 })
      yield* client.write("EHLO client\r\n")
      assert.strictEqual(yield* readLine(server), "EHLO client\r\n")
    }))

  it.live("plaintext injected after STARTTLS that Node buffered fails the handshake instead of being read", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* client.write("STARTTLS\r\n")
      assert.strictEqual(yield* readLine(server), "STARTTLS\r\n")
      // Sent before the ClientHello: whether it already sits in Node's buffer or arrives
      // later, it reaches the TLS engine, never a read.
      yield* client.write("NOOP\r\n")
      const upgraded = yield* Effect.forkChild(Effect.exit(server.upgradeTls({ role: "server", tls: serverTls })), { startImmediately: true })
      const c = yield* Effect.exit(client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost" } }))
      const s = yield* Fiber.join(upgraded)
      assert.strictEqual(reasonOf(s), "Tls")
      assert.strictEqual(reasonOf(c), "Tls")
      const after = yield* Effect.exit(server.read)
      assert.isTrue(Exit.isFailure(after))
    }))

  it.live("plaintext kept while no read waited goes to the TLS engine at the upgrade, never to a read", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* client.write("STARTTLS\r\n")
      assert.strictEqual(yield* readLine(server), "STARTTLS\r\n")
      yield* client.write("NOOP\r\n")
      yield* Effect.sleep("50 millis") // it arrives while no read waits (see above)
      const upgraded = yield* Effect.forkChild(Effect.exit(server.upgradeTls({ role: "server", tls: serverTls })), { startImmediately: true })
      const c = yield* Effect.exit(client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost" } }))
      assert.strictEqual(reasonOf(yield* Fiber.join(upgraded)), "Tls")
      assert.strictEqual(reasonOf(c), "Tls")
      assert.isTrue(Exit.isFailure(yield* Effect.exit(server.read)))
    }))

  it.live("plaintext a server injects after its 220 fails the client's handshake instead of being read", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* server.write("220 go ahead\r\n")
      assert.strictEqual(yield* readLine(client), "220 go ahead\r\n")
      yield* server.write("250 injected\r\n") // precedes the ServerHello on the wire
      const s = yield* Effect.forkChild(Effect.exit(server.upgradeTls({ role: "server", tls: serverTls })), { startImmediately: true })
      const c = yield* Effect.exit(client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost" } }))
      assert.strictEqual(reasonOf(c), "Tls")
      assert.isTrue(Exit.isFailure(yield* Effect.exit(client.read)))
      assert.strictEqual(reasonOf(yield* Fiber.join(s)), "Tls")
    }))

  it.live("the handshake succeeds when the client's ClientHello is already buffered before the server upgrades", () =>
    Effect.gen(function*() {
      // A raw server, to see when Node has buffered the ClientHello on the plain socket.
      const accepted: Array<net.Socket> = []
      const raw = net.createServer({ pauseOnConnect: true }, (s) => void accepted.push(s))
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => void raw.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => raw.close())
      )
      const port = (raw.address() as net.AddressInfo).port
      const client = yield* NodeTransport.connect({ endpoint: loopback(port) })
      while (accepted.length === 0) yield* Effect.yieldNow
      const socket = accepted[0]!
      const server = yield* NodeTransport.make(socket, "server")

      yield* client.write("STARTTLS\r\n")
      assert.strictEqual(yield* readLine(server), "STARTTLS\r\n")
      yield* server.write("220 go ahead\r\n")
      assert.strictEqual(yield* readLine(client), "220 go ahead\r\n")
      // The client starts its handshake at once; the server waits until the ClientHello is in
      // Node's buffer of the plain socket, and only then upgrades.
      const clientSide = yield* Effect.forkChild(
        client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost" } }),
        { startImmediately: true }
      )
      if (socket.readableLength === 0) {
        yield* Effect.callback<void>((resume) => {
          const onReadable = () => resume(Effect.void)
          socket.once("readable", onReadable)
          return Effect.sync(() => socket.off("readable", onReadable))
        })
      }
      assert.isAbove(socket.readableLength, 0)
      yield* server.upgradeTls({ role: "server", tls: serverTls })
      yield* Fiber.join(clientSide)
      yield* client.write("EHLO client\r\n")
      assert.strictEqual(yield* readLine(server), "EHLO client\r\n")
    }))

  it.live("the server can upgrade a connection it never read from", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      yield* Effect.all([
        server.upgradeTls({ role: "server", tls: serverTls }),
        client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost" } })
      ], { concurrency: 2 })
      yield* server.write("220 hello\r\n")
      assert.strictEqual(yield* readLine(client), "220 hello\r\n")
    }))

  it.live("an interrupted handshake (timeout) fails the connection and releases it", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      // The client never starts its handshake.
      const s = yield* Effect.exit(server.upgradeTls({ role: "server", tls: serverTls }).pipe(Effect.timeout("100 millis")))
      assert.isTrue(Exit.isFailure(s))
      assert.strictEqual(reasonOf(yield* Effect.exit(server.write("x"))), "Tls")
      assert.strictEqual(yield* Effect.exit(readToEof(client)).pipe(Effect.map(Exit.isSuccess)), true)
    }))

  it.live("an upgrade with the wrong role or invalid options fails with Tls", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connectedPair()
      assert.strictEqual(reasonOf(yield* Effect.exit(server.upgradeTls({ role: "client", tls: {} }))), "Tls")
      assert.strictEqual(reasonOf(yield* Effect.exit(client.upgradeTls({ role: "server", tls: serverTls }))), "Tls")
      const bad = yield* Effect.exit(server.upgradeTls({ role: "server", tls: { key: "not a key", cert: "not a cert" } }))
      assert.strictEqual(reasonOf(bad), "Tls")
    }))
})

describe("NodeTransport implicit TLS", () => {
  it.live("listen with tls hands out connections whose handshake is done", () =>
    Effect.gen(function*() {
      const listener = yield* NodeTransport.listen({ endpoint: loopback(), tls: serverTls })
      assert.isTrue(listener.implicitTls)
      // A client that does not trust the server: connect fails with Tls, the listener survives.
      const refused = yield* Effect.exit(NodeTransport.connect({ endpoint: listener.endpoint, tls: { servername: "localhost" } }))
      assert.strictEqual(reasonOf(refused), "Tls")
      // A plaintext client: its handshake fails on the server, it never surfaces.
      const plain = yield* NodeTransport.connect({ endpoint: listener.endpoint })
      yield* plain.write("EHLO plain\r\n")
      yield* Effect.exit(readToEof(plain))

      const client = yield* NodeTransport.connect({ endpoint: listener.endpoint, tls: { ca: certs.ca, servername: "localhost" } })
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      assert.strictEqual(server.tls()?.protocol, "TLSv1.3")
      assert.strictEqual(server.tls()?.servername, "localhost")
      assert.isTrue(client.tls()?.authorized)
      assert.strictEqual(client.tls()?.servername, "localhost")
      assert.deepStrictEqual(server.remoteEndpoint, client.localEndpoint)
      assert.strictEqual(reasonOf(yield* Effect.exit(server.upgradeTls({ role: "server", tls: serverTls }))), "Tls")

      const big = payload(4 * 1024 * 1024, 6)
      const [got] = yield* Effect.all([readBytes(server, big.length), writeAll(client, big)], { concurrency: 2 })
      assert.strictEqual(sha256(got), sha256(big))
      yield* server.write("221 bye\r\n")
      yield* server.close
      assert.strictEqual(text(yield* readToEof(client)), "221 bye\r\n")
    }))

  it.live("listen with invalid certificates fails with Listen", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(NodeTransport.listen({ endpoint: loopback(), tls: { key: "nope", cert: "nope" } }))
      assert.strictEqual(reasonOf(exit), "Listen")
    }))
})

describe("NodeTransport over Unix sockets", () => {
  it.live("listens and connects; the server side knows the path; the file goes with the scope", () =>
    Effect.gen(function*() {
      const file = socketPath()
      const scope = yield* Scope.make()
      const listener = yield* NodeTransport.listen({ endpoint: { _tag: "Unix", path: file } }).pipe(Scope.provide(scope))
      assert.deepStrictEqual(listener.endpoint, { _tag: "Unix", path: file })
      const client = yield* NodeTransport.connect({ endpoint: listener.endpoint })
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      assert.deepStrictEqual(server.localEndpoint, { _tag: "Unix", path: file })
      assert.deepStrictEqual(client.remoteEndpoint, { _tag: "Unix", path: file })

      const big = payload(5 * 1024 * 1024, 7)
      const [got] = yield* Effect.all([readBytes(server, big.length), writeAll(client, big)], { concurrency: 2 })
      assert.strictEqual(sha256(got), sha256(big))

      // STARTTLS over a Unix socket (the client names the server).
      yield* Effect.all([
        server.upgradeTls({ role: "server", tls: serverTls }),
        client.upgradeTls({ role: "client", tls: { ca: certs.ca, servername: "localhost" } })
      ], { concurrency: 2 })
      yield* client.write("EHLO unix\r\n")
      assert.strictEqual(yield* readLine(server), "EHLO unix\r\n")

      yield* Scope.close(scope, Exit.void)
      assert.isFalse(fs.existsSync(file))
      assert.strictEqual(reasonOf(yield* Effect.exit(NodeTransport.connect({ endpoint: { _tag: "Unix", path: file } }))), "Connect")
      // The accepted connection is the taker's: it outlives the listener.
      yield* server.write("250 still here\r\n")
      assert.strictEqual(yield* readLine(client), "250 still here\r\n")
    }))

  it.live("replaces a stale socket file, refuses a live one and leaves other files alone", () =>
    Effect.gen(function*() {
      const file = socketPath()
      const stale = file + ".stale"
      // A stale socket file: a hard link to a socket whose server is gone.
      const raw = net.createServer()
      yield* Effect.callback<void>((resume) => void raw.listen(file, () => resume(Effect.void)))
      fs.linkSync(file, stale)
      yield* Effect.callback<void>((resume) => void raw.close(() => resume(Effect.void)))
      assert.isTrue(fs.lstatSync(stale).isSocket())

      const listener = yield* NodeTransport.listen({ endpoint: { _tag: "Unix", path: stale } })
      const client = yield* NodeTransport.connect({ endpoint: { _tag: "Unix", path: stale } })
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      yield* client.write("hi\r\n")
      assert.strictEqual(yield* readLine(server), "hi\r\n")

      // Live: somebody listens there.
      const live = yield* Effect.exit(NodeTransport.listen({ endpoint: { _tag: "Unix", path: stale } }))
      assert.strictEqual(reasonOf(live), "Listen")
      // Not a socket: never removed.
      const plain = file + ".txt"
      fs.writeFileSync(plain, "keep me")
      assert.strictEqual(reasonOf(yield* Effect.exit(NodeTransport.listen({ endpoint: { _tag: "Unix", path: plain } }))), "Listen")
      assert.strictEqual(fs.readFileSync(plain, "utf8"), "keep me")
    }))
})

describe("NodeTransport listeners", () => {
  it.live("closing the scope stops accepting, fails accept, releases the port; taken connections live on", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const listener = yield* NodeTransport.listen({ endpoint: loopback() }).pipe(Scope.provide(scope))
      const taken = yield* NodeTransport.connect({ endpoint: listener.endpoint })
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)

      const pending = yield* Effect.forkChild(listener.accept, { startImmediately: true })
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(reasonOf(yield* Fiber.await(pending)), "Closed")
      assert.strictEqual(reasonOf(yield* Effect.exit(listener.accept)), "Closed")

      assert.strictEqual(reasonOf(yield* Effect.exit(NodeTransport.connect({ endpoint: listener.endpoint }))), "Connect")
      // The port is free again.
      const again = yield* NodeTransport.listen({ endpoint: listener.endpoint })
      assert.deepStrictEqual(again.endpoint, listener.endpoint)
      // The taken connection is its taker's.
      yield* taken.write("ping\r\n")
      assert.strictEqual(yield* readLine(server), "ping\r\n")
      yield* server.write("pong\r\n")
      assert.strictEqual(yield* readLine(taken), "pong\r\n")
    }))

  it.live("connections nobody took are closed with the listener's scope", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const listener = yield* NodeTransport.listen({ endpoint: loopback() }).pipe(Scope.provide(scope))
      const first = yield* NodeTransport.connect({ endpoint: listener.endpoint })
      const second = yield* NodeTransport.connect({ endpoint: listener.endpoint })
      yield* second.write("anyone?\r\n")
      // Taking the first lets Node accept the queue of the kernel, the second with it.
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      yield* Scope.close(scope, Exit.void)
      // The second sees its connection end (EOF, or a reset if it was still in the kernel's queue).
      const exit = yield* Effect.exit(readToEof(second))
      assert.isTrue(Exit.isFailure(exit) || (Exit.isSuccess(exit) && exit.value.length === 0))
      yield* first.write("still\r\n")
      assert.strictEqual(yield* readLine(server), "still\r\n")
    }))

  it.live("binds IPv6 loopback", () =>
    Effect.gen(function*() {
      const listener = yield* Effect.exit(NodeTransport.listen({ endpoint: { _tag: "Tcp", host: "::1", port: 0 } }))
      if (Exit.isFailure(listener)) return // no IPv6 on this machine
      const endpoint = listener.value.endpoint
      assert.strictEqual(endpoint._tag === "Tcp" && endpoint.host, "::1")
      const client = yield* NodeTransport.connect({ endpoint })
      const server = yield* Effect.acquireRelease(listener.value.accept, (t) => t.close)
      assert.strictEqual(server.remoteEndpoint?._tag === "Tcp" && server.remoteEndpoint.host, "::1")
      yield* client.write("v6\r\n")
      assert.strictEqual(yield* readLine(server), "v6\r\n")
    }))

  it.live("a port in use is a Listen error", () =>
    Effect.gen(function*() {
      const listener = yield* NodeTransport.listen({ endpoint: loopback() })
      assert.strictEqual(reasonOf(yield* Effect.exit(NodeTransport.listen({ endpoint: listener.endpoint }))), "Listen")
    }))
})

describe("NodeTransport.connect", () => {
  it.live("connection refused is a Connect error", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const listener = yield* NodeTransport.listen({ endpoint: loopback() }).pipe(Scope.provide(scope))
      yield* Scope.close(scope, Exit.void)
      const exit = yield* Effect.exit(NodeTransport.connect({ endpoint: listener.endpoint }))
      assert.strictEqual(reasonOf(exit), "Connect")
      assert.strictEqual(reasonOf(yield* Effect.exit(NodeTransport.connect({ endpoint: listener.endpoint, tls: {} }))), "Connect")
    }))

  it.live("a missing Unix socket is a Connect error", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(NodeTransport.connect({ endpoint: { _tag: "Unix", path: socketPath() } }))
      assert.strictEqual(reasonOf(exit), "Connect")
    }))

  it.live("the layer provides Network", () =>
    Effect.gen(function*() {
      const network = yield* Network
      const listener = yield* network.listen({ endpoint: loopback() })
      const client = yield* network.connect({ endpoint: listener.endpoint })
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      yield* client.write("hi\r\n")
      assert.strictEqual(yield* readLine(server), "hi\r\n")
    }).pipe(Effect.provide(NodeTransport.layer)))
})
