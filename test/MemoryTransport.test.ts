import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as MemoryTransport from "../src/MemoryTransport.ts"
import { type Endpoint, Network, type Transport, type TransportError } from "../src/Transport.ts"

const text = (b: Uint8Array | undefined) => b === undefined ? "<eof>" : new TextDecoder().decode(b)
const serverTls = { cert: "server-cert", key: "server-key" }

const reasonOf = <A>(exit: Exit.Exit<A, TransportError>): string | undefined =>
  Exit.isFailure(exit) ? exit.cause.reasons.map((r) => r._tag === "Fail" ? r.error.reason : r._tag).join(",") : undefined

const readAll = (t: Transport) =>
  Effect.gen(function*() {
    let s = ""
    while (true) {
      const c = yield* t.read
      if (c === undefined) return s
      s += text(c)
    }
  })

describe("MemoryTransport.pair", () => {
  it.effect("carries bytes both ways, as written", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair()
      yield* client.write("EHLO x\r\n")
      const bytes = new TextEncoder().encode("MAIL FROM:<a@b>\r\n")
      yield* client.write(bytes)
      bytes.fill(0) // the transport kept a copy
      assert.strictEqual(text(yield* server.read), "EHLO x\r\n")
      assert.strictEqual(text(yield* server.read), "MAIL FROM:<a@b>\r\n")
      yield* server.write("250 ok\r\n")
      assert.strictEqual(text(yield* client.read), "250 ok\r\n")
      assert.strictEqual(client.tls(), undefined)
    }))

  it.effect("reports the endpoints it was given", () =>
    Effect.gen(function*() {
      const c: Endpoint = { _tag: "Tcp", host: "192.0.2.1", port: 40000 }
      const s: Endpoint = { _tag: "Tcp", host: "192.0.2.25", port: 25 }
      const [client, server] = yield* MemoryTransport.pair({ clientEndpoint: c, serverEndpoint: s })
      assert.deepStrictEqual([client.localEndpoint, client.remoteEndpoint], [c, s])
      assert.deepStrictEqual([server.localEndpoint, server.remoteEndpoint], [s, c])
    }))

  it.effect("close ends the peer's stream after what was sent; writes and reads after close fail", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair()
      yield* client.write("QUIT\r\n")
      yield* client.close
      yield* client.close // idempotent
      assert.strictEqual(yield* readAll(server), "QUIT\r\n")
      assert.strictEqual(yield* server.read, undefined)
      assert.strictEqual(reasonOf(yield* Effect.exit(client.write("x"))), "Closed")
      assert.strictEqual(reasonOf(yield* Effect.exit(client.read)), "Closed")
      // Writing to a peer that closed fails too.
      assert.strictEqual(reasonOf(yield* Effect.exit(server.write("221 bye\r\n"))), "Closed")
    }))

  it.effect("close fails a pending read; only one read may be pending", () =>
    Effect.gen(function*() {
      const [, server] = yield* MemoryTransport.pair()
      const pending = yield* Effect.forkChild(server.read, { startImmediately: true })
      assert.strictEqual(reasonOf(yield* Effect.exit(server.read)), "Read")
      yield* server.close
      assert.strictEqual(reasonOf(yield* Fiber.await(pending)), "Closed")
    }))

  it.effect("an interrupted read loses nothing", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair()
      const pending = yield* Effect.forkChild(server.read, { startImmediately: true })
      yield* Fiber.interrupt(pending)
      yield* client.write("after")
      assert.strictEqual(text(yield* server.read), "after")
    }))

  it.effect("a pending read is woken by the peer's write and by its close", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair()
      const first = yield* Effect.forkChild(server.read, { startImmediately: true })
      yield* client.write("x")
      assert.strictEqual(text(yield* Fiber.join(first)), "x")
      const second = yield* Effect.forkChild(server.read, { startImmediately: true })
      yield* client.close
      assert.strictEqual(yield* Fiber.join(second), undefined)
    }))
})

describe("MemoryTransport TLS", () => {
  const handshake = (
    client: Transport,
    server: Transport,
    clientTls: Parameters<Transport["upgradeTls"]>[0] & { role: "client" } = { role: "client", tls: {} },
    serverOpts: Parameters<Transport["upgradeTls"]>[0] & { role: "server" } = { role: "server", tls: serverTls }
  ) => Effect.all([Effect.exit(client.upgradeTls(clientTls)), Effect.exit(server.upgradeTls(serverOpts))], { concurrency: 2 })

  it.effect("both ends upgrade; unread plaintext from before the upgrade is dropped", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair({ serverEndpoint: { _tag: "Tcp", host: "mx.example.org", port: 25 } })
      yield* client.write("STARTTLS\r\n")
      yield* client.write("NOOP\r\n") // pipelined plaintext: must never come out after the upgrade
      assert.strictEqual(text(yield* server.read), "STARTTLS\r\n")
      yield* server.write("220 go ahead\r\n")
      yield* server.write("250 injected\r\n") // the client must not see this after its upgrade
      assert.strictEqual(text(yield* client.read), "220 go ahead\r\n")

      const [c, s] = yield* handshake(client, server)
      assert.isTrue(Exit.isSuccess(c))
      assert.isTrue(Exit.isSuccess(s))
      yield* client.write("EHLO c\r\n")
      assert.strictEqual(text(yield* server.read), "EHLO c\r\n")
      yield* server.write("250 hi\r\n")
      assert.strictEqual(text(yield* client.read), "250 hi\r\n")

      const st = server.tls()
      assert.strictEqual(st?.protocol, "TLSv1.3")
      assert.strictEqual(st?.servername, "mx.example.org") // the default SNI name is the host
      assert.isFalse(st?.authorized) // no client certificate was asked for
      assert.strictEqual(st?.peerCertificate, undefined)
      assert.isTrue(client.tls()?.authorized)
      assert.strictEqual(client.tls()?.cipher, st?.cipher)
      assert.strictEqual(reasonOf(yield* Effect.exit(client.upgradeTls({ role: "client", tls: {} }))), "Tls")
    }))

  it.effect("servername and client certificates follow the options", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair({ serverEndpoint: { _tag: "Tcp", host: "192.0.2.25", port: 25 } })
      yield* handshake(
        client,
        server,
        { role: "client", tls: { servername: "smtp.example.org", cert: "client-cert", key: "client-key" } },
        { role: "server", tls: { ...serverTls, requestCert: true } }
      )
      assert.strictEqual(server.tls()?.servername, "smtp.example.org")
      assert.isTrue(server.tls()?.authorized)
      assert.strictEqual(server.tls()?.authorizationError, undefined)

      const [client2, server2] = yield* MemoryTransport.pair({ serverEndpoint: { _tag: "Tcp", host: "192.0.2.25", port: 25 } })
      yield* handshake(client2, server2, { role: "client", tls: {} }, { role: "server", tls: { ...serverTls, requestCert: true, rejectUnauthorized: false } })
      assert.strictEqual(server2.tls()?.servername, undefined) // an IP is not sent as SNI
      assert.isFalse(server2.tls()?.authorized)
      assert.isString(server2.tls()?.authorizationError)
    }))

  it.effect("handshake failures fail both ends with Tls and leave the connection unusable", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [Parameters<Transport["upgradeTls"]>[0], Parameters<Transport["upgradeTls"]>[0]]> = [
        [{ role: "client", tls: {} }, { role: "client", tls: {} }], // same role
        [{ role: "client", tls: {} }, { role: "server", tls: {} }], // no server certificate
        [{ role: "client", tls: {} }, { role: "server", tls: { ...serverTls, requestCert: true } }] // client certificate required
      ]
      for (const [a, b] of cases) {
        const [client, server] = yield* MemoryTransport.pair()
        const [c, s] = yield* Effect.all([Effect.exit(client.upgradeTls(a)), Effect.exit(server.upgradeTls(b))], { concurrency: 2 })
        assert.strictEqual(reasonOf(c), "Tls")
        assert.strictEqual(reasonOf(s), "Tls")
        assert.strictEqual(reasonOf(yield* Effect.exit(client.write("x"))), "Tls")
        assert.strictEqual(reasonOf(yield* Effect.exit(server.read)), "Tls")
        assert.strictEqual(client.tls(), undefined)
      }
    }))

  it.effect("the peer closing during the handshake fails it; writes during it fail", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair()
      const upgrading = yield* Effect.forkChild(server.upgradeTls({ role: "server", tls: serverTls }), { startImmediately: true })
      assert.strictEqual(reasonOf(yield* Effect.exit(server.write("x"))), "Tls")
      yield* client.close
      assert.strictEqual(reasonOf(yield* Fiber.await(upgrading)), "Tls")
    }))

  it.effect("an interrupted handshake (a timeout) closes the connection", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair()
      const upgrading = yield* Effect.forkChild(server.upgradeTls({ role: "server", tls: serverTls }), { startImmediately: true })
      yield* Fiber.interrupt(upgrading)
      assert.strictEqual(yield* client.read, undefined)
      assert.strictEqual(reasonOf(yield* Effect.exit(client.upgradeTls({ role: "client", tls: {} }))), "Tls")
    }))

  it.effect("a pair can start already encrypted", () =>
    Effect.gen(function*() {
      const [client, server] = yield* MemoryTransport.pair({ tls: { client: { servername: "mx.test" }, server: serverTls } })
      assert.strictEqual(client.tls()?.protocol, "TLSv1.3")
      assert.strictEqual(server.tls()?.servername, "mx.test")
      yield* client.write("EHLO c\r\n")
      assert.strictEqual(text(yield* server.read), "EHLO c\r\n")
      assert.strictEqual(reasonOf(yield* Effect.exit(server.upgradeTls({ role: "server", tls: serverTls }))), "Tls")
      const bad = yield* Effect.exit(MemoryTransport.pair({ tls: { client: {}, server: {} } }))
      assert.strictEqual(reasonOf(bad), "Tls")
    }))
})

describe("MemoryTransport.layer", () => {
  it.effect("listen + connect + accept, with endpoints", () =>
    Effect.gen(function*() {
      const network = yield* Network
      const listener = yield* network.listen({ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 0 } })
      assert.strictEqual(listener.endpoint._tag, "Tcp")
      assert.isAbove(listener.endpoint._tag === "Tcp" ? listener.endpoint.port : 0, 0)
      assert.isFalse(listener.implicitTls)
      const client = yield* network.connect({ endpoint: listener.endpoint })
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      assert.deepStrictEqual(client.remoteEndpoint, listener.endpoint)
      assert.deepStrictEqual(server.localEndpoint, listener.endpoint)
      assert.deepStrictEqual(server.remoteEndpoint, client.localEndpoint)
      yield* server.write("220 mx\r\n")
      assert.strictEqual(text(yield* client.read), "220 mx\r\n")
      // STARTTLS works over layer connections too.
      const [c, s] = yield* Effect.all([
        Effect.exit(client.upgradeTls({ role: "client", tls: {} })),
        Effect.exit(server.upgradeTls({ role: "server", tls: serverTls }))
      ], { concurrency: 2 })
      assert.isTrue(Exit.isSuccess(c) && Exit.isSuccess(s))
    }).pipe(Effect.provide(MemoryTransport.layer)))

  it.effect("refuses where nobody listens, and a second listener on the same endpoint", () =>
    Effect.gen(function*() {
      const network = yield* Network
      const refused = yield* Effect.exit(network.connect({ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 2525 } }))
      assert.strictEqual(reasonOf(refused), "Connect")
      const unix: Endpoint = { _tag: "Unix", path: "/run/smtp.sock" }
      assert.strictEqual(reasonOf(yield* Effect.exit(network.connect({ endpoint: unix }))), "Connect")
      yield* network.listen({ endpoint: unix })
      assert.strictEqual(reasonOf(yield* Effect.exit(network.listen({ endpoint: unix }))), "Listen")
      const client = yield* network.connect({ endpoint: unix })
      assert.deepStrictEqual(client.remoteEndpoint, unix)
    }).pipe(Effect.provide(MemoryTransport.layer)))

  it.effect("a wildcard listener takes connections to any host on its port", () =>
    Effect.gen(function*() {
      const network = yield* Network
      const listener = yield* network.listen({ endpoint: { _tag: "Tcp", host: "::", port: 587 } })
      const client = yield* network.connect({ endpoint: { _tag: "Tcp", host: "192.0.2.1", port: 587 } })
      const server = yield* listener.accept
      yield* client.write("hi")
      assert.strictEqual(text(yield* server.read), "hi")
    }).pipe(Effect.provide(MemoryTransport.layer)))

  it.effect("closing the listener's scope fails accept, refuses connects and closes untaken connections", () =>
    Effect.gen(function*() {
      const network = yield* Network
      const scope = yield* Scope.make()
      const endpoint: Endpoint = { _tag: "Tcp", host: "127.0.0.1", port: 25 }
      const listener = yield* network.listen({ endpoint }).pipe(Scope.provide(scope))
      const takenClient = yield* network.connect({ endpoint })
      const taken = yield* listener.accept
      const untaken = yield* network.connect({ endpoint })
      yield* untaken.write("hello?")

      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(reasonOf(yield* Effect.exit(listener.accept)), "Closed")
      assert.strictEqual(yield* untaken.read, undefined)
      assert.strictEqual(reasonOf(yield* Effect.exit(network.connect({ endpoint }))), "Connect")
      // The endpoint is free again, and the taken connection is its taker's.
      yield* network.listen({ endpoint })
      yield* takenClient.write("still here")
      assert.strictEqual(text(yield* taken.read), "still here")
    }).pipe(Effect.provide(MemoryTransport.layer)))

  it.effect("a pending accept fails when the listener closes; an interrupted accept leaves it usable", () =>
    Effect.gen(function*() {
      const network = yield* Network
      const scope = yield* Scope.make()
      const listener = yield* network.listen({ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 0 } }).pipe(Scope.provide(scope))
      const interrupted = yield* Effect.forkChild(listener.accept, { startImmediately: true })
      yield* Fiber.interrupt(interrupted)
      yield* network.connect({ endpoint: listener.endpoint })
      yield* listener.accept
      const pending = yield* Effect.forkChild(listener.accept, { startImmediately: true })
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(reasonOf(yield* Fiber.await(pending)), "Closed")
    }).pipe(Effect.provide(MemoryTransport.layer)))

  it.effect("implicit TLS: both sides start encrypted; TLS on one side only fails with Tls", () =>
    Effect.gen(function*() {
      const network = yield* Network
      const listener = yield* network.listen({ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 465 }, tls: serverTls })
      assert.isTrue(listener.implicitTls)
      assert.strictEqual(reasonOf(yield* Effect.exit(network.connect({ endpoint: listener.endpoint }))), "Tls")
      const client = yield* network.connect({ endpoint: listener.endpoint, tls: { servername: "smtp.example.org" } })
      const server = yield* listener.accept
      assert.strictEqual(server.tls()?.servername, "smtp.example.org")
      assert.strictEqual(client.tls()?.protocol, "TLSv1.3")
      const plain = yield* network.listen({ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 25 } })
      assert.strictEqual(reasonOf(yield* Effect.exit(network.connect({ endpoint: plain.endpoint, tls: {} }))), "Tls")
    }).pipe(Effect.provide(MemoryTransport.layer)))

  it.effect("each build of the layer is a separate network", () =>
    Effect.gen(function*() {
      const endpoint: Endpoint = { _tag: "Tcp", host: "127.0.0.1", port: 25 }
      yield* Effect.gen(function*() {
        yield* (yield* Network).listen({ endpoint })
      }).pipe(Effect.provide(MemoryTransport.layer))
      const other = yield* Effect.exit(Effect.gen(function*() {
        return yield* (yield* Network).connect({ endpoint })
      }).pipe(Effect.provide(MemoryTransport.layer)))
      assert.strictEqual(reasonOf(other), "Connect")
    }))
})
