/**
 * Hostile peers against a test server: write whatever bytes, read everything the server says
 * until it hangs up, then check that it is still the server it was (no connection left open,
 * every session finalizer run, a new connection served normally).
 *
 * In memory the server's deadlines run on the TestClock, so a case takes no real time; over
 * TCP a raw `node:net` socket is used, so nothing in the library stands between the bytes and
 * the server.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import * as net from "node:net"
import type { Endpoint, Transport } from "../../../src/Transport.ts"
import type { Recorder } from "../../support/backend.ts"
import { dialog, type TestServer, waitFor } from "../../support/server.ts"

export const fromLatin1 = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff)
export const toLatin1 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("latin1")

/** Cuts `bytes` at the given offsets (taken modulo its length, sorted, deduplicated). */
export const split = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  if (bytes.length === 0) return []
  const at = [...new Set(cuts.map((c) => c % bytes.length).filter((c) => c > 0))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const c of at) {
    out.push(bytes.subarray(from, c))
    from = c
  }
  out.push(bytes.subarray(from))
  return out
}

/** Lets every runnable fiber run until it waits again (on the peer or on the clock). */
export const settle = Effect.gen(function*() {
  for (let i = 0; i < 100; i++) yield* Effect.yieldNow
})

/** Everything the peer sends until it closes, one char per byte. */
const readAll = (t: Transport): Effect.Effect<string> =>
  Effect.gen(function*() {
    let text = ""
    while (true) {
      const chunk = yield* t.read.pipe(Effect.orElseSucceed(() => undefined))
      if (chunk === undefined) return text
      text += toLatin1(chunk)
    }
  })

/**
 * In memory, on the TestClock: connects, writes the chunks (pausing between them when `paced`,
 * so each one is read on its own), then lets virtual time pass until the server hangs up.
 * Returns what the server said. Dies if the server is still there after 6 virtual hours.
 */
export const memoryAttack = (
  s: TestServer,
  chunks: ReadonlyArray<Uint8Array>,
  options: { readonly paced?: boolean } = {}
): Effect.Effect<string> =>
  Effect.scoped(Effect.gen(function*() {
    const t = yield* Effect.orDie(s.network.connect({ endpoint: s.endpoint }))
    const reader = yield* Effect.forkScoped(readAll(t))
    for (const chunk of chunks) {
      // Once the server has hung up, writes fail: the rest of the attack goes nowhere.
      yield* t.write(chunk).pipe(Effect.ignore)
      if (options.paced === true) yield* settle
    }
    for (let i = 0; i < 72 && reader.pollUnsafe() === undefined; i++) {
      yield* settle
      yield* TestClock.adjust("5 minutes")
    }
    if (reader.pollUnsafe() === undefined) {
      return yield* Effect.die(new Error("the server kept a hostile connection open for 6 virtual hours"))
    }
    return yield* Fiber.join(reader)
  }))

export interface TcpOutcome {
  /** What the server sent, one char per byte. */
  readonly text: string
  /** "closed": a clean end (FIN); "reset": an error such as ECONNRESET; "timeout": still open at the deadline. */
  readonly end: "closed" | "reset" | "timeout"
  readonly error: string | undefined
}

/**
 * Over real TCP: connects a raw socket, writes the chunks (each after the previous one was
 * handed to the kernel), half-closes when `halfClose`, and reads until the server hangs up or
 * `timeoutMs` passes.
 */
export const tcpAttack = (
  endpoint: Endpoint,
  chunks: ReadonlyArray<Uint8Array>,
  options: { readonly halfClose: boolean; readonly timeoutMs: number; readonly localAddress?: string }
): Effect.Effect<TcpOutcome> =>
  Effect.callback<TcpOutcome>((resume) => {
    if (endpoint._tag !== "Tcp") return resume(Effect.die(new Error("tcpAttack needs a TCP endpoint")))
    const socket = net.connect({
      host: endpoint.host,
      port: endpoint.port,
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress })
    })
    socket.setNoDelay(true)
    let text = ""
    let error: string | undefined
    let done = false
    const finish = (end: TcpOutcome["end"]) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resume(Effect.succeed({ text, end, error }))
    }
    const timer = setTimeout(() => finish("timeout"), options.timeoutMs)
    socket.on("data", (b: Buffer) => {
      text += b.toString("latin1")
    })
    socket.on("error", (e: NodeJS.ErrnoException) => {
      error ??= e.code ?? e.message
    })
    socket.on("close", () => finish(error === undefined ? "closed" : "reset"))
    socket.on("connect", () => {
      const writeNext = (i: number) => {
        if (done || socket.destroyed) return
        if (i >= chunks.length) {
          if (options.halfClose) socket.end()
          return
        }
        socket.write(chunks[i]!, (e) => {
          if (e === undefined || e === null) writeNext(i + 1)
        })
      }
      writeNext(0)
    })
    return Effect.sync(() => finish("timeout"))
  })

/** TCP sockets of this process (the server's and the test's): a leak shows as a count that stays up. */
export const openSockets = (): number =>
  process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap" || r === "TLSWrap").length

/**
 * The server is back to normal: no connection open, every session's finalizer run, and a new
 * connection gets a whole message through.
 */
export const servesNormally = (s: TestServer, rec: Recorder) =>
  Effect.gen(function*() {
    yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
    if (rec.logouts() !== rec.sessions.length) {
      return yield* Effect.die(new Error(`${rec.sessions.length} sessions but ${rec.logouts()} finalizers run`))
    }
    const before = rec.messages.length
    const p = yield* Effect.orDie(s.open())
    const got = yield* Effect.orDie(dialog(
      p,
      "EHLO fresh.example",
      "MAIL FROM:<fresh@example.com>",
      "RCPT TO:<rcpt@example.com>",
      "DATA",
      "Subject: still here\r\n\r\nhello\r\n.",
      "QUIT"
    ))
    const expected = ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]
    if (got.join() !== expected.join()) {
      return yield* Effect.die(new Error(`a fresh connection got ${got.join(", ")} instead of ${expected.join(", ")}`))
    }
    const last = rec.messages.at(-1)
    if (rec.messages.length !== before + 1 || last?.body !== "Subject: still here\r\n\r\nhello\r\n") {
      return yield* Effect.die(new Error("the fresh connection's message did not reach the backend intact"))
    }
    yield* waitFor(() => Effect.runSync(s.server.activeConnections) === 0)
  })

/** Log entries at level Error or above: a defect or a failure the server did not expect. */
export const errorLogs = (s: TestServer) => s.logs.filter((l) => l.level === "ERROR" || l.level === "FATAL")

/** One way of writing a byte string: the chunks, each its own write (and, in memory, its own read). */
export interface Delivery {
  readonly name: string
  readonly chunks: ReadonlyArray<Uint8Array>
}

/**
 * The ways the framing tests deliver `text` (one char per byte): in one write, a byte per
 * write, and cut in two at every point (or at `cutEvery`-th points, for long inputs).
 */
export const deliveries = (text: string, options: { readonly cutEvery?: number } = {}): Array<Delivery> => {
  const bytes = fromLatin1(text)
  const out: Array<Delivery> = [
    { name: "one write", chunks: [bytes] },
    { name: "one byte per write", chunks: Array.from(bytes, (b) => Uint8Array.of(b)) }
  ]
  const step = options.cutEvery ?? 1
  for (let i = 1; i < bytes.length; i += step) out.push({ name: `cut at ${i}`, chunks: split(bytes, [i]) })
  return out
}

/** The replies of a transcript as tests compare them: "250 2.0.0", or "250" without an enhanced code. */
export const codes = (text: string): Array<string> => {
  const out: Array<string> = []
  let open = false
  for (const line of text.split("\r\n")) {
    const m = /^(\d{3})([ -])(\d\.\d{1,3}\.\d{1,3}(?= |$))?/.exec(line)
    if (m === null) continue
    if (!open) out.push(m[3] === undefined ? m[1]! : `${m[1]} ${m[3]}`)
    open = m[2] === "-"
  }
  return out
}
