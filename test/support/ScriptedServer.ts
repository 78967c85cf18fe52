/**
 * A scripted SMTP server for client tests: the test writes the server's side as an Effect
 * program (read a line, answer, misbehave), so replies can be malformed, late, injected or
 * missing at will. Reads from the transport are counted, so a test can tell how many writes
 * the client needed (MemoryTransport delivers each write as one chunk).
 *
 * `ownServer` runs the project's own `SmtpServer` with a recording backend instead, for the
 * tests of a client against a well-behaved server.
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Address } from "../../src/Address.ts"
import { Backend, type MessageBody, type Session } from "../../src/Backend.ts"
import type { MailOptions } from "../../src/MailOptions.ts"
import * as MemoryTransport from "../../src/MemoryTransport.ts"
import * as NodeTransport from "../../src/NodeTransport.ts"
import type * as Sasl from "../../src/Sasl.ts"
import type { SmtpError } from "../../src/SmtpError.ts"
import * as SmtpServer from "../../src/SmtpServer.ts"
import type { ServerOptions } from "../../src/SmtpServer.ts"
import {
  type Endpoint,
  Network,
  type TlsServerOptions,
  type Transport,
  TransportError
} from "../../src/Transport.ts"

export interface ServerPeer {
  readonly transport: Transport
  /** Writes text (latin1, one char per byte) or bytes as they are. */
  readonly send: (data: string | Uint8Array) => Effect.Effect<void, TransportError>
  /** Writes `code text` lines as one reply: `reply(250, "a", "b")` is "250-a\r\n250 b\r\n". */
  readonly reply: (code: number, ...lines: ReadonlyArray<string>) => Effect.Effect<void, TransportError>
  /** The next line, without its CRLF. */
  readonly line: Effect.Effect<string, TransportError>
  /** Reads a line and checks it against `pattern` (a string must match exactly); dies otherwise. */
  readonly expect: (pattern: string | RegExp) => Effect.Effect<string, TransportError>
  /** The next bytes: what is buffered, or one read from the transport. */
  readonly chunk: Effect.Effect<Uint8Array, TransportError>
  /** Exactly `n` bytes (a BDAT chunk). */
  readonly bytes: (n: number) => Effect.Effect<Uint8Array, TransportError>
  /** Everything up to and including `terminator` (latin1), e.g. "\r\n.\r\n" after DATA. */
  readonly until: (terminator: string) => Effect.Effect<string, TransportError>
  /** Reads from the transport so far. */
  readonly reads: () => number
  /** The server side of a TLS handshake (after sending 220 to STARTTLS). */
  readonly startTls: (tls?: TlsServerOptions) => Effect.Effect<void, TransportError>
  /** Reads until the client closes; true on a clean close. */
  readonly closed: Effect.Effect<boolean, TransportError>
  readonly close: Effect.Effect<void>
}

const latin1 = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1")
const fromLatin1 = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0))

/** A fake certificate: MemoryTransport only checks that one is there. */
export const memoryTls: TlsServerOptions = { cert: "memory", key: "memory" }

const peer = (transport: Transport): ServerPeer => {
  let buf = new Uint8Array(0)
  let reads = 0
  const fill = Effect.flatMap(transport.read, (c) => {
    reads++
    if (c === undefined) return Effect.fail(new TransportError({ reason: "Closed", message: "client closed" }))
    const next = new Uint8Array(buf.length + c.length)
    next.set(buf, 0)
    next.set(c, buf.length)
    buf = next
    return Effect.void
  })
  const take = (n: number) => {
    const out = buf.slice(0, n)
    buf = buf.slice(n)
    return out
  }
  const until = (terminator: string): Effect.Effect<string, TransportError> =>
    Effect.suspend(() => {
      const at = latin1(buf).indexOf(terminator)
      if (at >= 0) return Effect.succeed(latin1(take(at + terminator.length)))
      return Effect.andThen(fill, until(terminator))
    })
  const line = Effect.map(until("\r\n"), (l) => l.slice(0, -2))
  const bytes = (n: number): Effect.Effect<Uint8Array, TransportError> =>
    Effect.suspend(() => (buf.length >= n ? Effect.succeed(take(n)) : Effect.andThen(fill, bytes(n))))
  const send = (data: string | Uint8Array) => transport.write(typeof data === "string" ? fromLatin1(data) : data)
  return {
    transport,
    send,
    reply: (code, ...lines) =>
      send((lines.length === 0 ? [""] : lines).map((l, i, all) => `${code}${i === all.length - 1 ? " " : "-"}${l}\r\n`).join("")),
    line,
    expect: (pattern) =>
      Effect.flatMap(line, (l) => {
        const ok = typeof pattern === "string" ? l === pattern : pattern.test(l)
        return ok ? Effect.succeed(l) : Effect.die(new Error(`scripted server expected ${String(pattern)}, got ${JSON.stringify(l)}`))
      }),
    chunk: Effect.suspend(() => (buf.length > 0 ? Effect.succeed(take(buf.length)) : Effect.andThen(fill, Effect.sync(() => take(buf.length))))),
    bytes,
    until,
    reads: () => reads,
    startTls: (tls) => transport.upgradeTls({ role: "server", tls: tls ?? memoryTls }),
    closed: transport.read.pipe(
      Effect.flatMap((c) => (c === undefined ? Effect.succeed(true) : Effect.succeed(false))),
      Effect.catchTag("TransportError", (e) => (e.reason === "Closed" ? Effect.succeed(true) : Effect.fail(e)))
    ),
    close: transport.close
  }
}

/** The EHLO reply lines for a server named `mx.test` offering `extensions`. */
export const ehlo = (peer: ServerPeer, ...extensions: ReadonlyArray<string>) =>
  peer.reply(250, "mx.test greets you", ...extensions)

/** Greeting, then EHLO answered with `extensions`. */
export const greet = (peer: ServerPeer, ...extensions: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    yield* peer.reply(220, "mx.test ESMTP scripted")
    yield* peer.expect(/^EHLO /)
    yield* ehlo(peer, ...extensions)
  })

export interface Scripted {
  /** The client's end, for `SmtpClient.fromTransport`. */
  readonly client: Transport
  readonly peer: ServerPeer
  /** The script; join it to see its failures. */
  readonly fiber: Fiber.Fiber<void, unknown>
}

/** An in-memory connection whose server end runs `script`, then closes. */
export const pair = (
  script: (peer: ServerPeer) => Effect.Effect<void, unknown>
): Effect.Effect<Scripted, never, Scope.Scope> =>
  Effect.gen(function*() {
    const [client, server] = yield* MemoryTransport.pair()
    const p = peer(server)
    const fiber = yield* Effect.forkScoped(Effect.ensuring(script(p), server.close))
    return { client, peer: p, fiber }
  })

export interface Listening {
  readonly endpoint: Endpoint
  /** Connections accepted so far. */
  readonly accepted: () => number
  /** Failures of the scripts so far (assertion failures are defects). */
  readonly failures: () => ReadonlyArray<unknown>
}

/**
 * Listens through the `Network` service and runs `script` for each connection (`n` counts
 * from 0). Everything stops when the scope closes.
 */
export const listen = (
  script: (peer: ServerPeer, n: number) => Effect.Effect<void, unknown>,
  options: { readonly endpoint?: Endpoint; readonly tls?: TlsServerOptions } = {}
): Effect.Effect<Listening, TransportError, Network | Scope.Scope> =>
  Effect.gen(function*() {
    const network = yield* Network
    const listener = yield* network.listen({
      endpoint: options.endpoint ?? { _tag: "Tcp", host: "127.0.0.1", port: 0 },
      tls: options.tls
    })
    let accepted = 0
    const failures: Array<unknown> = []
    yield* listener.accept.pipe(
      Effect.flatMap((transport) => {
        const n = accepted++
        return script(peer(transport), n).pipe(
          Effect.catchCause((cause) => Effect.sync(() => {
            if (!Cause.hasInterruptsOnly(cause)) failures.push(cause)
          })),
          Effect.ensuring(transport.close),
          Effect.forkScoped
        )
      }),
      Effect.forever,
      Effect.forkScoped
    )
    return { endpoint: listener.endpoint, accepted: () => accepted, failures: () => failures }
  })

// ---------------------------------------------------------------------------------------------
// The project's own server, for comparison: SmtpServer with a backend that records everything.

/** What the recording backend lets a test decide. */
export interface Hooks {
  readonly mail?: (from: Address | null) => Effect.Effect<void, SmtpError>
  readonly rcpt?: (to: Address) => Effect.Effect<void, SmtpError>
  /** After the whole body was read. */
  readonly data?: (body: Uint8Array) => Effect.Effect<void, SmtpError>
  /** LMTP: the status of each recipient. */
  readonly lmtp?: (body: Uint8Array, recipients: ReadonlyArray<Address>) => ReadonlyArray<SmtpError | undefined>
  readonly auth?: Sasl.SaslServerMechanisms
}

interface Received {
  readonly from: Address | null
  readonly to: ReadonlyArray<Address>
  readonly options: MailOptions
  readonly body: Uint8Array
}

export interface OwnServer {
  readonly endpoint: Endpoint
  /** The network the server listens on: give it to the client. */
  readonly network: Network["Service"]
  /** Messages stored, in order. */
  readonly received: Array<Received>
  /**
   * What sessions do, as it happens: "session", "mail", "rcpt", "body" (first bytes of a
   * body), "message" (stored), "failed" (a body that did not arrive whole), "reset", "end".
   */
  readonly events: Queue.Queue<string>
  /** Sessions open now, and the most ever open at once. */
  readonly sessions: () => { readonly total: number; readonly open: number; readonly maxOpen: number }
}

const concatBytes = (parts: ReadonlyArray<Uint8Array>) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/**
 * Starts `SmtpServer` on a fresh in-memory network (or the real one with `node: true`) with
 * a backend that records what it receives. Closing the scope stops it.
 */
export const ownServer = (
  options: Partial<ServerOptions> & { readonly hooks?: Hooks; readonly node?: boolean } = {}
): Effect.Effect<OwnServer, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const { hooks = {}, node = false, ...serverOptions } = options
    const received: Array<Received> = []
    const events = yield* Queue.unbounded<string>()
    const emit = (e: string) => Queue.offer(events, e)
    let total = 0
    let open = 0
    let maxOpen = 0
    const readBody = (body: MessageBody) =>
      Effect.gen(function*() {
        const parts: Array<Uint8Array> = []
        yield* body.pipe(Stream.runForEach((c) => Effect.andThen(parts.length === 0 ? emit("body") : Effect.void, Effect.sync(() => parts.push(c)))))
        return concatBytes(parts)
      }).pipe(Effect.tapError(() => emit("failed")))
    const backend = Backend.of({
      newSession: () =>
        Effect.gen(function*() {
          total++
          open++
          maxOpen = Math.max(maxOpen, open)
          yield* emit("session")
          yield* Effect.addFinalizer(() => Effect.andThen(Effect.sync(() => open--), emit("end")))
          let from: Address | null = null
          let mailOptions: MailOptions = {}
          let to: Array<Address> = []
          const session: Session = {
            mail: (f, o) =>
              Effect.gen(function*() {
                yield* emit("mail")
                if (hooks.mail !== undefined) yield* hooks.mail(f)
                from = f
                mailOptions = o
                to = []
              }),
            rcpt: (t) =>
              Effect.gen(function*() {
                yield* emit("rcpt")
                if (hooks.rcpt !== undefined) yield* hooks.rcpt(t)
                to.push(t)
              }),
            data: (body) =>
              Effect.gen(function*() {
                const bytes = yield* readBody(body)
                if (hooks.data !== undefined) yield* hooks.data(bytes)
                received.push({ from, to: [...to], options: mailOptions, body: bytes })
                yield* emit("message")
              }),
            reset: Effect.andThen(Effect.sync(() => {
              to = []
            }), emit("reset")),
            ...(hooks.lmtp === undefined ? {} : {
              lmtpData: (body: MessageBody, recipients: ReadonlyArray<Address>) =>
                Effect.gen(function*() {
                  const bytes = yield* readBody(body)
                  const statuses = hooks.lmtp!(bytes, recipients)
                  received.push({ from, to: recipients.filter((_, i) => statuses[i] === undefined), options: mailOptions, body: bytes })
                  yield* emit("message")
                  return statuses
                })
            }),
            ...(hooks.auth === undefined ? {} : { auth: hooks.auth })
          }
          return session
        })
    })
    const server = SmtpServer.layer({
      listen: [{ endpoint: { _tag: "Tcp", host: "127.0.0.1", port: 0 } }],
      timeouts: { shutdown: 0 },
      ...serverOptions
    }).pipe(
      Layer.provide(Layer.succeed(Backend, backend)),
      Layer.provideMerge(node ? NodeTransport.layer : MemoryTransport.layer)
    )
    const context = yield* Layer.build(server)
    return {
      endpoint: Context.get(context, SmtpServer.SmtpServer).listeners[0]!.endpoint,
      network: Context.get(context, Network),
      received,
      events,
      sessions: () => ({ total, open, maxOpen })
    }
  })

/** Takes events until `event` comes. */
export const awaitEvent = (server: OwnServer, event: string): Effect.Effect<void> =>
  Effect.flatMap(Queue.take(server.events), (e) => (e === event ? Effect.void : awaitEvent(server, event)))
