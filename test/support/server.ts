/**
 * Starts an `SmtpServer` for a test, over the in-memory network or real TCP, with a
 * recording backend, captured logs, and a tap on the server side of every connection
 * (reads, writes, and a gate that can hold writes as a peer that stops reading would).
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Latch from "effect/Latch"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import type { Backend } from "../../src/Backend.ts"
import type { Reply } from "../../src/Reply.ts"
import * as MemoryTransport from "../../src/MemoryTransport.ts"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpServer from "../../src/SmtpServer.ts"
import { type ConnectOptions, type Endpoint, Network, type Transport, TransportError } from "../../src/Transport.ts"
import { TransportView } from "../../src/internal/transport/TransportView.ts"
import * as Wire from "./wire.ts"

export type Net = "memory" | "tcp"

interface LogEntry {
  readonly level: string
  readonly message: unknown
  readonly annotations: Record<string, unknown>
  readonly cause: string | undefined
}

/** What the server side of the connections did, summed over all of them. */
interface Tap {
  /** Calls of `read` that returned (a chunk or the end). */
  reads: number
  bytesRead: number
  /** Every `write`, as text (latin1). */
  readonly writes: Array<string>
  /** Writes wait while it is closed. */
  readonly writeGate: Latch.Latch
  /** Writes waiting at the closed gate right now. */
  heldWrites: number
}

const latin1 = (data: Uint8Array | string) => typeof data === "string" ? data : Buffer.from(data).toString("latin1")

const tapTransport = (t: Transport, tap: Tap): Transport => {
  const write = (data: Uint8Array | string) =>
    Effect.sync(() => tap.heldWrites++).pipe(
      Effect.andThen(tap.writeGate.await),
      Effect.ensuring(Effect.sync(() => tap.heldWrites--)),
      Effect.andThen(Effect.sync(() => void tap.writes.push(latin1(data)))),
      Effect.andThen(t.write(data))
    )
  return new TransportView(t, {
    read: Effect.tap(t.read, (chunk) =>
      Effect.sync(() => {
        tap.reads++
        tap.bytesRead += chunk?.length ?? 0
      })),
    write,
    // Held like `write` while the gate is closed: then the writer has something to wait for.
    writeUnsafe: (data) => {
      if (!tap.writeGate.isOpen()) return write(data)
      tap.writes.push(latin1(data))
      return t.writeUnsafe(data)
    }
  })
}

/** The same network, with the server side of every accepted connection tapped. */
const tapNetwork = (inner: Network["Service"], tap: Tap): Network["Service"] =>
  Network.of({
    connect: inner.connect,
    listen: (options) =>
      Effect.map(inner.listen(options), (l) => ({ ...l, accept: Effect.map(l.accept, (t) => tapTransport(t, tap)) }))
  })

export interface StartOptions extends Partial<SmtpServer.ServerOptions> {
  readonly net?: Net | undefined
  readonly backend: Layer.Layer<Backend>
}

export interface TestServer {
  readonly server: SmtpServer.SmtpServer["Service"]
  /** Where the first listener is bound. */
  readonly endpoint: Endpoint
  /** The client side of the network the server listens on. */
  readonly network: Network["Service"]
  /** A raw peer connected to `endpoint` (or `options.endpoint`); the test's scope closes it. */
  readonly connect: (options?: Partial<ConnectOptions>) => Effect.Effect<Wire.Peer, TransportError, Scope.Scope>
  /** Connects and reads the greeting. */
  readonly open: (options?: Partial<ConnectOptions>) => Effect.Effect<Wire.Peer, TransportError, Scope.Scope>
  /** Closes the server layer's scope (the test's scope also does, at its end). */
  readonly stop: Effect.Effect<void>
  readonly logs: Array<LogEntry>
  readonly tap: Tap
}

export const loopback: Endpoint = { _tag: "Tcp", host: "127.0.0.1", port: 0 }

/** Builds the server in a scope of its own, closed by `stop` or when the test's scope closes. */
export const start = (options: StartOptions): Effect.Effect<TestServer, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const { backend, net = "memory", ...serverOptions } = options
    const network = net === "memory" ? yield* MemoryTransport.makeNetwork : yield* Network.pipe(Effect.provide(NodeTransport.layer))
    const tap: Tap = { reads: 0, bytesRead: 0, writes: [], writeGate: yield* Latch.make(true), heldWrites: 0 }
    const logs: Array<LogEntry> = []
    const capture = Logger.make((o) => {
      const s = Logger.formatStructured.log(o)
      logs.push({ level: s.level, message: s.message, annotations: s.annotations, cause: s.cause })
    })
    const layer = SmtpServer.layer({ listen: [{ endpoint: loopback }], ...serverOptions }).pipe(
      Layer.provide(backend),
      Layer.provide(Layer.succeed(Network, tapNetwork(network, tap))),
      Layer.provide(Logger.layer([capture])),
      Layer.provide(Layer.succeed(References.MinimumLogLevel, "All"))
    )
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(layer, scope).pipe(
      Effect.tapError(() => Scope.close(scope, Exit.void))
    )
    const server = Context.get(context, SmtpServer.SmtpServer)
    const endpoint = server.listeners[0]!.endpoint
    const connect = (o?: Partial<ConnectOptions>) =>
      Effect.map(network.connect({ endpoint, ...o }), Wire.peer)
    return {
      server,
      endpoint,
      network,
      connect,
      open: (o) =>
        Effect.gen(function*() {
          const p = yield* connect(o)
          const greeting = yield* p.reply
          if (greeting.code !== 220) {
            return yield* new TransportError({ reason: "Read", message: `unexpected greeting ${greeting.code}` })
          }
          return p
        }),
      stop: Scope.close(scope, Exit.void),
      logs,
      tap
    }
  })

/** "250 2.1.0" (or "250" when the reply has no enhanced code): the part of a reply tests compare. */
export const show = (r: Reply): string => r.enhancedCode === undefined ? `${r.code}` : `${r.code} ${r.enhancedCode.join(".")}`

/** Sends each line and returns what `show` makes of each reply. */
export const dialog = (p: Wire.Peer, ...lines: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const out: Array<string> = []
    for (const line of lines) out.push(show(yield* p.command(line)))
    return out
  })

/** Reads `n` replies. */
export const replies = (p: Wire.Peer, n: number) =>
  Effect.gen(function*() {
    const out: Array<string> = []
    for (let i = 0; i < n; i++) out.push(show(yield* p.reply))
    return out
  })

/** EHLO, MAIL, RCPT (each must succeed). */
export const envelope = (p: Wire.Peer, rcpts: ReadonlyArray<string> = ["rcpt@example.com"], hello = "EHLO client.example") =>
  Effect.gen(function*() {
    const got = yield* dialog(p, hello, "MAIL FROM:<sender@example.com>", ...rcpts.map((r) => `RCPT TO:<${r}>`))
    const ok = got.every((r) => r.startsWith("250"))
    if (!ok) return yield* new TransportError({ reason: "Read", message: `envelope refused: ${got.join(", ")}` })
  })

/** Lets every runnable fiber run until `condition` holds (at most `rounds` scheduler turns). */
export const eventually = (condition: () => boolean, rounds = 10_000) =>
  Effect.gen(function*() {
    for (let i = 0; i < rounds && !condition(); i++) yield* Effect.yieldNow
    if (!condition()) return yield* Effect.die(new Error("condition not reached"))
  })

/**
 * Polls (real time, a few ms apart) until `condition` holds, for state with no event to await
 * (counters the server updates after the peer saw the connection end).
 */
export const waitFor = (condition: () => boolean, timeoutMs = 10_000) =>
  Effect.gen(function*() {
    const since = Date.now()
    while (!condition()) {
      if (Date.now() - since > timeoutMs) return yield* Effect.die(new Error("condition not reached in time"))
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 2)))
    }
  })

/** Waits until the server has `n` connections open. */
export const activeIs = (s: TestServer, n: number) => waitFor(() => Effect.runSync(s.server.activeConnections) === n)

/** Waits until the server has no connection left. */
export const drained = (s: TestServer) => activeIs(s, 0)
