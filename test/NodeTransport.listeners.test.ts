/**
 * NodeTransport listeners beyond one process and behind proxies, over real sockets: PROXY
 * headers read before `accept` (the bytes after one in the same write kept, implicit TLS after
 * it), untrusted peers closed; `reusePort`; a listening socket whose connections another
 * listener adopts (what `serve --workers` does for Unix sockets, across processes).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Duplex } from "node:stream"
import * as tls from "node:tls"
import * as NodeTransport from "../src/NodeTransport.ts"
import * as ProxyProtocol from "../src/ProxyProtocol.ts"
import type { Endpoint, Transport, TransportError } from "../src/Transport.ts"
import { testCerts } from "./support/certs.ts"

const certs = testCerts()
const serverTls = { key: certs.server.key, cert: certs.server.cert }
const loopback = (port = 0): Endpoint => ({ _tag: "Tcp", host: "127.0.0.1", port })
const tcp = (host: string, port: number): Endpoint => ({ _tag: "Tcp", host, port })
const text = (b: Uint8Array | undefined) => b === undefined ? "<eof>" : Buffer.from(b).toString("latin1")
const header = ProxyProtocol.format({ version: 2, source: tcp("198.51.100.7", 4711), destination: tcp("203.0.113.25", 465) })

const portOf = (e: Endpoint) => e._tag === "Tcp" ? e.port : -1

/** A raw TCP client, closed with the scope. */
const rawClient = (port: number) =>
  Effect.acquireRelease(
    Effect.callback<net.Socket>((resume) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => resume(Effect.succeed(s)))
      s.on("error", () => {})
    }),
    (s) => Effect.sync(() => s.destroy())
  )

/** Everything the socket receives until the server closes it. */
const untilClosed = (s: net.Socket) =>
  Effect.callback<string>((resume) => {
    const chunks: Array<Buffer> = []
    s.on("data", (c: Buffer) => chunks.push(c))
    s.once("close", () => resume(Effect.succeed(Buffer.concat(chunks).toString("latin1"))))
  })

/**
 * A stream over `socket` whose first write carries `prefix` in front: a TLS client over it sends
 * the PROXY header and its ClientHello in one write, as HAProxy forwards them.
 */
const prefixed = (socket: net.Socket, prefix: Uint8Array): Duplex => {
  let first = true
  const d = new Duplex({
    write(chunk: Buffer, _encoding, callback) {
      socket.write(first ? Buffer.concat([prefix, chunk]) : chunk, callback)
      first = false
    },
    read() {
      socket.resume()
    },
    final(callback) {
      socket.end(callback)
    }
  })
  socket.on("data", (c: Buffer) => {
    if (!d.push(c)) socket.pause()
  })
  socket.on("end", () => d.push(null))
  return d
}

const readLine = (t: Transport) =>
  Effect.gen(function*() {
    let out = ""
    while (!out.endsWith("\n")) {
      const c = yield* t.read
      if (c === undefined) return out
      out += text(c)
    }
    return out
  })

describe("NodeTransport PROXY protocol listeners", () => {
  it.live("the header's client is the remote endpoint; bytes after it in the same write come first", () =>
    Effect.gen(function*() {
      const listener = yield* NodeTransport.listen({ endpoint: loopback(), proxyProtocol: { trusted: ["127.0.0.1"] } })
      const client = yield* rawClient(portOf(listener.endpoint))
      client.write(Buffer.concat([header, Buffer.from("EHLO early\r\n")]))
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      assert.deepStrictEqual(server.remoteEndpoint, tcp("198.51.100.7", 4711))
      assert.deepStrictEqual(server.localEndpoint, tcp("203.0.113.25", 465))
      assert.deepStrictEqual(server.proxy?.proxy, tcp("127.0.0.1", client.localPort!))
      assert.strictEqual(server.proxy?.header.version, 2)
      assert.strictEqual(yield* readLine(server), "EHLO early\r\n")
      client.write("NOOP\r\n")
      assert.strictEqual(yield* readLine(server), "NOOP\r\n")
      yield* server.write("250 ok\r\n")
      client.end()
      yield* server.close
    }))

  it.live("implicit TLS under the header: the ClientHello in the same write is not lost", () =>
    Effect.gen(function*() {
      const listener = yield* NodeTransport.listen({
        endpoint: loopback(),
        tls: serverTls,
        proxyProtocol: { trusted: ["127.0.0.0/8"] }
      })
      const raw = yield* rawClient(portOf(listener.endpoint))
      const secure = yield* Effect.acquireRelease(
        Effect.callback<tls.TLSSocket>((resume) => {
          const s = tls.connect({ socket: prefixed(raw, header), ca: certs.ca, servername: "localhost" }, () => resume(Effect.succeed(s)))
          s.on("error", (e) => resume(Effect.die(e)))
        }),
        (s) => Effect.sync(() => s.destroy())
      )
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      assert.strictEqual(server.tls()?.protocol, "TLSv1.3")
      assert.deepStrictEqual(server.remoteEndpoint, tcp("198.51.100.7", 4711))
      secure.write("EHLO secure\r\n")
      assert.strictEqual(yield* readLine(server), "EHLO secure\r\n")
      const reply = Effect.callback<string>((resume) => {
        secure.once("data", (c: Buffer) => resume(Effect.succeed(c.toString())))
      })
      yield* server.write("250 secure\r\n")
      assert.strictEqual(yield* reply, "250 secure\r\n")
    }))

  it.live("an untrusted peer is closed without a byte; a trusted one with a bad header too", () =>
    Effect.gen(function*() {
      const untrusting = yield* NodeTransport.listen({ endpoint: loopback(), proxyProtocol: { trusted: ["10.0.0.0/8", "::1"] } })
      const a = yield* rawClient(portOf(untrusting.endpoint))
      a.write(header)
      assert.strictEqual(yield* untilClosed(a), "")
      const trusting = yield* NodeTransport.listen({ endpoint: loopback(), proxyProtocol: { trusted: ["127.0.0.1"] } })
      const b = yield* rawClient(portOf(trusting.endpoint))
      b.write("EHLO not-a-proxy\r\n")
      assert.strictEqual(yield* untilClosed(b), "")
      // The listener goes on: a good header is accepted.
      const c = yield* rawClient(portOf(trusting.endpoint))
      c.write(header)
      const server = yield* Effect.acquireRelease(trusting.accept, (t) => t.close)
      assert.deepStrictEqual(server.remoteEndpoint, tcp("198.51.100.7", 4711))
    }))
})

describe("NodeTransport reusePort", () => {
  it.live("two listeners on one port, and the kernel spreads connections over both", () =>
    Effect.gen(function*() {
      const first = yield* NodeTransport.listen({ endpoint: loopback(), reusePort: true })
      const port = portOf(first.endpoint)
      const second = yield* NodeTransport.listen({ endpoint: loopback(port), reusePort: true })
      assert.strictEqual(portOf(second.endpoint), port)
      // Without the option the port is taken.
      const taken = yield* Effect.exit(NodeTransport.listen({ endpoint: loopback(port) }))
      assert.isTrue(Exit.isFailure(taken) && Exit.findErrorOption(taken)._tag === "Some")
      const counts = [0, 0]
      const count = (i: number, l: typeof first) =>
        Effect.forever(Effect.flatMap(l.accept, (t) => Effect.andThen(Effect.sync(() => counts[i]!++), t.close)))
      yield* Effect.forkScoped(count(0, first))
      yield* Effect.forkScoped(count(1, second))
      // 40 connections from distinct ports: all on one listener has odds of 2^-39.
      for (let i = 0; i < 40; i++) {
        const c = yield* rawClient(port)
        yield* untilClosed(c)
      }
      assert.strictEqual(counts[0]! + counts[1]!, 40)
      assert.isAbove(counts[0]!, 0)
      assert.isAbove(counts[1]!, 0)
    }))

  it.live("is for TCP: a Unix socket with reusePort is a Listen error", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "esmtp-reuse-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const exit = yield* Effect.exit(NodeTransport.listen({ endpoint: { _tag: "Unix", path: path.join(dir, "s") }, reusePort: true }))
      const error = Exit.isFailure(exit) ? Exit.findErrorOption(exit) : undefined
      assert.strictEqual(error?._tag === "Some" && (error.value as TransportError).reason, "Listen")
    }))
})

describe("NodeTransport adopt", () => {
  it.live("connections a socket listener accepts are handed over to an adopting listener", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "esmtp-adopt-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const endpoint: Endpoint = { _tag: "Unix", path: path.join(dir, "lmtp") }
      const adopted = yield* NodeTransport.adopt({ endpoint })
      const bound = yield* NodeTransport.listenSockets({ endpoint, unix: { mode: 0o600 } }, adopted.handOver)
      assert.deepStrictEqual(bound, endpoint)
      assert.strictEqual(fs.statSync(endpoint.path).mode & 0o777, 0o600)
      const client = yield* NodeTransport.connect({ endpoint })
      yield* client.write("LHLO x\r\n")
      const server = yield* Effect.acquireRelease(adopted.listener.accept, (t) => t.close)
      assert.deepStrictEqual(server.localEndpoint, endpoint)
      assert.strictEqual(yield* readLine(server), "LHLO x\r\n")
      yield* server.write("250 ok\r\n")
      assert.strictEqual(text(yield* client.read), "250 ok\r\n")
    }))
})
