/**
 * `effect-smtp serve --workers N`: N server processes on the same listeners, kept running by a
 * supervisor (this process, which serves no client itself).
 *
 * - TCP listeners: every worker binds its own socket with SO_REUSEPORT (`reusePort`), and the
 *   kernel spreads new connections over them. No connection passes through the supervisor. A
 *   port given as 0 is picked by the first worker, and the others bind that one.
 * - Unix socket listeners: one path, one socket, so the supervisor binds it and hands each
 *   connection to the next ready worker over the IPC channel (the worker does TLS and the rest).
 * - A worker that exits is started again after a delay that doubles with each quick death
 *   (100 ms up to 10 s; a worker that ran for 10 s starts the count over), so a crash loop does
 *   not spin. A worker that fails while the supervisor starts up stops everything, with its
 *   exit code.
 * - SIGTERM or SIGINT: every worker is told SIGTERM at once, says 421 to its clients and exits;
 *   the supervisor waits for them (the shutdown grace and 10 s more, then SIGKILL) and exits 0.
 *   A worker whose supervisor disappears shuts down the same way.
 * - Events: workers send theirs over IPC; the supervisor prints them, the `listening` events
 *   once when all workers are up, and `worker` events when one is ready or exits.
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { ChildProcess } from "node:child_process"
import type * as net from "node:net"
import * as NodeTransport from "../NodeTransport.ts"
import * as SmtpServer from "../SmtpServer.ts"
import { type Endpoint, type ListenOptions, Network, type TransportError } from "../Transport.ts"
import type { ConnectionInfo } from "../Backend.ts"
import { SmtpError } from "../SmtpError.ts"
import { ClientCounts } from "./ClientCounts.ts"
import * as DevServer from "./DevServer.ts"

/** The environment variable that makes `serve` a worker: JSON of {@link WorkerSettings}. */
const WORKER_ENV = "EFFECT_SMTP_WORKER"

/** What the supervisor tells a worker. */
export interface WorkerSettings {
  /** 1 to N. */
  readonly worker: number
  /** Per listener (in the order of `listen`): the TCP port to bind instead of 0, if one was picked. */
  readonly ports: ReadonlyArray<number | null>
  /** `--tls-self-signed`: the supervisor's certificate, the same for every worker. */
  readonly selfSigned?: { readonly key: string; readonly cert: string } | undefined
}

type Listening = Extract<DevServer.Event, { readonly event: "listening" }>

/** Worker → supervisor. */
type FromWorker =
  | { readonly type: "ready"; readonly listening: ReadonlyArray<Listening> }
  | { readonly type: "event"; readonly event: DevServer.Event }
  /** May a new connection from `ip` be served? (the per-IP limit over all workers) */
  | { readonly type: "admit"; readonly id: number; readonly ip: string }
  /** An admitted connection from `ip` has ended. */
  | { readonly type: "release"; readonly ip: string }

/** Supervisor → worker. */
type ToWorker =
  /** A connection accepted on the Unix listener at `path` (the socket comes with it). */
  | { readonly type: "connection"; readonly path: string }
  /** The answer to `admit` number `id`. */
  | { readonly type: "admitted"; readonly id: number; readonly ok: boolean }

// ---------------------------------------------------------------------------------------------
// Restarts

/** The delay before restart number `failures` in a row: 100 ms, doubling, at most 10 s. */
export const restartDelay = (failures: number): Duration.Duration =>
  Duration.millis(Math.min(10_000, 100 * 2 ** Math.max(0, failures - 1)))

/** A worker that ran this long was not crash-looping: its next restart is quick again. */
const STABLE_AFTER = Duration.seconds(10)

/** How one run of a worker ended. */
export interface Outcome {
  readonly code: number | null
  readonly signal: string | null
  /** It became ready before it exited. */
  readonly ready: boolean
  readonly pid?: number | undefined
}

/**
 * Runs `lifetime` (one worker process, start to exit) again and again, waiting
 * {@link restartDelay} before each restart; `onExit` hears of each exit and the delay chosen.
 * Interrupting it ends the current lifetime (its scope terminates the process).
 */
export const keepAlive = <E>(
  lifetime: Effect.Effect<Outcome, E, Scope.Scope>,
  onExit: (outcome: Outcome, restartIn: Duration.Duration) => Effect.Effect<void, E>
): Effect.Effect<never, E> =>
  Effect.gen(function*() {
    let failures = 0
    while (true) {
      const started = yield* Clock.currentTimeMillis
      const outcome = yield* Effect.scoped(lifetime)
      const lived = (yield* Clock.currentTimeMillis) - started
      failures = lived >= Duration.toMillis(STABLE_AFTER) ? 1 : failures + 1
      const delay = restartDelay(failures)
      yield* onExit(outcome, delay)
      yield* Effect.sleep(delay)
    }
  })

// ---------------------------------------------------------------------------------------------
// The supervisor

/** A worker failed while the server started: the supervisor exits with its code. */
export class WorkerStartFailed extends Data.TaggedError("WorkerStartFailed")<{
  readonly message: string
  readonly exitCode: number
}> {}

export interface SuperviseOptions {
  readonly workers: number
  /** The server's listeners as the flags gave them (port 0 allowed). */
  readonly listen: ReadonlyArray<SmtpServer.ListenSpec>
  readonly emit: (event: DevServer.Event) => Effect.Effect<void>
  /** Connections per client address over all workers (each worker also applies it to its own). */
  readonly maxConnectionsPerIp: number
  /** How long a worker may take to shut down before SIGKILL: its grace and 10 s more. */
  readonly shutdownGrace: Duration.Duration
  readonly selfSigned?: { readonly key: string; readonly cert: string } | undefined
}

interface Slot {
  readonly worker: number
  child: ChildProcess | undefined
  ready: boolean
}

const exitOf = (child: ChildProcess): Effect.Effect<Outcome> =>
  Effect.callback((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      return resume(Effect.succeed({ code: child.exitCode, signal: child.signalCode, ready: false }))
    }
    child.once("exit", (code, signal) => resume(Effect.succeed({ code, signal, ready: false })))
  })

/** Runs N workers until interrupted (SIGTERM, SIGINT); fails if one cannot start at first. */
export const supervise = (options: SuperviseOptions): Effect.Effect<never, WorkerStartFailed | TransportError> =>
  Effect.scoped(Effect.gen(function*() {
    const slots: Array<Slot> = Array.from({ length: options.workers }, (_, i) => ({ worker: i + 1, child: undefined, ready: false }))
    let shuttingDown = false
    let started = false
    let ports: ReadonlyArray<number | null> = options.listen.map(() => null)
    const clients = new ClientCounts(options.maxConnectionsPerIp)

    // Unix listeners: the supervisor's, each connection to the next ready worker.
    let turn = 0
    const handOut = (path: string) => (socket: net.Socket) => {
      const ready = slots.filter((s) => s.ready && s.child?.connected === true)
      if (ready.length === 0) return void socket.destroy()
      const slot = ready[turn++ % ready.length]!
      const message: ToWorker = { type: "connection", path }
      slot.child!.send(message, socket, (error) => {
        if (error !== null) socket.destroy()
      })
    }
    for (const spec of options.listen) {
      if (spec.endpoint._tag !== "Unix") continue
      yield* NodeTransport.listenSockets({ endpoint: spec.endpoint, unix: spec.unix }, handOut(spec.endpoint.path))
    }

    // One worker process: started, ready, exited. Its scope ends it (SIGTERM, then SIGKILL).
    const lifetime = (slot: Slot, onReady: (listening: ReadonlyArray<Listening>) => Effect.Effect<void>) =>
      Effect.gen(function*() {
        const settings: WorkerSettings = { worker: slot.worker, ports, selfSigned: options.selfSigned }
        const child = yield* Effect.acquireRelease(
          Effect.sync(() =>
            // node:child_process is loaded by a supervisor, not by every `serve` that imports this.
            process.getBuiltinModule("node:child_process").fork(process.argv[1]!, process.argv.slice(2), {
              execArgv: process.execArgv,
              env: { ...process.env, [WORKER_ENV]: JSON.stringify(settings) },
              // Its own process group: a Ctrl-C reaches the supervisor, which tells the workers.
              detached: true,
              stdio: ["ignore", "ignore", "inherit", "ipc"]
            })
          ),
          (child) =>
            Effect.gen(function*() {
              slot.ready = false
              slot.child = undefined
              clients.forget(slot.worker)
              if (child.exitCode !== null || child.signalCode !== null) return
              child.kill("SIGTERM")
              const grace = Duration.sum(options.shutdownGrace, Duration.seconds(10))
              const stopped = yield* exitOf(child).pipe(Effect.timeoutOption(grace))
              if (stopped._tag === "None") child.kill("SIGKILL")
            })
        )
        slot.child = child
        const ready = yield* Deferred.make<ReadonlyArray<Listening>>()
        const runFork = yield* FiberSet.makeRuntime<never>()
        child.on("message", (m: FromWorker) => {
          if (m.type === "ready") Deferred.doneUnsafe(ready, Effect.succeed(m.listening))
          else if (m.type === "event") runFork(options.emit(m.event))
          else if (m.type === "admit") {
            // Past its lifetime, a worker's connections are gone: nothing more is counted for it.
            const answer: ToWorker = { type: "admitted", id: m.id, ok: slot.child === child && clients.admit(slot.worker, m.ip) }
            if (child.connected) child.send(answer)
          } else if (m.type === "release") clients.release(slot.worker, m.ip)
        })
        child.on("error", () => {}) // a failed send: its callback says so
        const exited = exitOf(child)
        const readied = yield* Effect.raceFirst(
          Effect.map(Deferred.await(ready), (l) => ({ _tag: "Ready" as const, listening: l })),
          Effect.map(exited, (o) => ({ _tag: "Exited" as const, outcome: o }))
        )
        if (readied._tag === "Exited") return { ...readied.outcome, pid: child.pid }
        slot.ready = true
        yield* options.emit({ event: "worker", worker: slot.worker, pid: child.pid ?? 0, status: "ready" })
        yield* onReady(readied.listening)
        return { ...(yield* exited), ready: true, pid: child.pid }
      })

    const firstReady = yield* Deferred.make<ReadonlyArray<Listening>>()
    const allReady = yield* Deferred.make<void>()
    let readyOnce = 0
    const onReady = (slot: Slot) => (listening: ReadonlyArray<Listening>) =>
      Effect.gen(function*() {
        if (slot.worker === 1) yield* Deferred.succeed(firstReady, listening)
        if (!started && ++readyOnce === options.workers) yield* Deferred.succeed(allReady, undefined)
      })
    const onExit = (slot: Slot) => (outcome: Outcome, restartIn: Duration.Duration) =>
      Effect.gen(function*() {
        if (!started) {
          return yield* new WorkerStartFailed({
            message: `worker ${slot.worker} exited during start-up (${outcome.signal ?? `exit code ${outcome.code}`})`,
            exitCode: outcome.code !== null && outcome.code !== 0 ? outcome.code : 1
          })
        }
        // Shutting down: the slot is about to be interrupted; it starts nothing.
        if (shuttingDown) return yield* Effect.never
        yield* options.emit({
          event: "worker",
          worker: slot.worker,
          pid: outcome.pid ?? 0,
          status: "exited",
          code: outcome.code,
          signal: outcome.signal,
          restartInMs: Duration.toMillis(restartIn)
        })
      })

    const workers = yield* FiberSet.make<never, WorkerStartFailed>()
    const run = (slot: Slot) => FiberSet.run(workers, keepAlive(lifetime(slot, onReady(slot)), onExit(slot)))
    // Shutdown: every worker hears SIGTERM at once, then each slot waits for its own.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        shuttingDown = true
        for (const s of slots) s.child?.kill("SIGTERM")
      })
    )
    // The first worker picks the ports asked as 0; the others bind the same ones.
    yield* run(slots[0]!)
    const listening = yield* Effect.raceFirst(Deferred.await(firstReady), Effect.flatMap(FiberSet.join(workers), () => Effect.never))
    ports = options.listen.map((spec, i) => {
      if (spec.endpoint._tag !== "Tcp" || spec.endpoint.port !== 0) return null
      const bound = listening[i] === undefined ? undefined : SmtpServer.parseListenAddress(listening[i]!.address)
      return bound?._tag === "Tcp" ? bound.port : null
    })
    for (const slot of slots.slice(1)) yield* run(slot)
    yield* Effect.raceFirst(Deferred.await(allReady), Effect.flatMap(FiberSet.join(workers), () => Effect.never))
    started = true
    for (const l of listening) yield* options.emit(l)
    return yield* Effect.flatMap(FiberSet.join(workers), () => Effect.never)
  }))

// ---------------------------------------------------------------------------------------------
// The worker

/** This process's settings when it is a worker of a supervisor, else undefined. */
export const workerSettings = (): WorkerSettings | undefined => {
  const raw = process.env[WORKER_ENV]
  if (raw === undefined || process.send === undefined) return undefined
  return JSON.parse(raw) as WorkerSettings
}

const send = (message: FromWorker) => {
  if (process.connected) process.send!(message)
}

/**
 * The per-IP limit over all workers, from the worker's side: each new TCP session asks the
 * supervisor, and tells it when the connection ends. A refusal is the same 421 the server gives
 * when one process is at its limit.
 */
const fleetAdmission = (domain: string) =>
  Effect.gen(function*() {
    const refusal = SmtpError.of(421, [4, 7, 0], `${domain} Too many connections from your address, try again later`)
    const pending = new Map<number, (ok: boolean) => void>()
    let next = 0
    const onMessage = (m: ToWorker) => {
      if (m?.type !== "admitted") return
      const answer = pending.get(m.id)
      pending.delete(m.id)
      answer?.(m.ok)
    }
    // Without a supervisor the worker is shutting down: let the last sessions be.
    const onDisconnect = () => {
      for (const answer of pending.values()) answer(true)
      pending.clear()
    }
    process.on("message", onMessage)
    process.on("disconnect", onDisconnect)
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        process.off("message", onMessage)
        process.off("disconnect", onDisconnect)
      })
    )
    return (connection: ConnectionInfo): Effect.Effect<void, SmtpError, Scope.Scope> => {
      const ip = connection.remoteEndpoint?._tag === "Tcp" ? connection.remoteEndpoint.host : undefined
      if (ip === undefined || !process.connected) return Effect.void
      const asked = Effect.callback<boolean>((resume) => {
        const id = ++next
        pending.set(id, (ok) => resume(Effect.succeed(ok)))
        send({ type: "admit", id, ip })
        // Interrupted while asking: an admission that still arrives is given back at once.
        return Effect.sync(() => {
          pending.set(id, (ok) => {
            if (ok) send({ type: "release", ip })
          })
        })
      })
      return Effect.flatMap(asked, (ok) =>
        ok
          ? Effect.addFinalizer(() => Effect.sync(() => send({ type: "release", ip })))
          : Effect.fail(refusal))
    }
  })

/**
 * The network of a worker: TCP listeners shared with the other workers (`reusePort`), Unix
 * listeners fed by the supervisor's hand-overs.
 */
const workerNetwork = Effect.gen(function*() {
  const handOvers = new Map<string, (socket: net.Socket) => void>()
  const onMessage = (m: ToWorker, socket: net.Socket | undefined) => {
    if (m?.type !== "connection" || socket === undefined) return
    const handOver = handOvers.get(m.path)
    if (handOver === undefined) socket.destroy()
    else handOver(socket)
  }
  process.on("message", onMessage)
  yield* Effect.addFinalizer(() => Effect.sync(() => process.off("message", onMessage)))
  const listen = (options: ListenOptions) =>
    options.endpoint._tag === "Unix"
      ? Effect.map(NodeTransport.adopt(options), ({ handOver, listener }) => {
        handOvers.set((options.endpoint as Extract<Endpoint, { _tag: "Unix" }>).path, handOver)
        return listener
      })
      : NodeTransport.listen({ ...options, reusePort: true })
  return Network.of({ listen, connect: NodeTransport.connect })
})

/**
 * Serves as worker `settings.worker` until SIGTERM, SIGINT or the supervisor's disappearance.
 * `events`: whether to send the supervisor the events it prints (`--events json`).
 */
export const runWorker = (
  options: DevServer.DevServerOptions,
  settings: WorkerSettings,
  events: boolean
): Effect.Effect<never, unknown> =>
  Effect.gen(function*() {
    const listen = options.server.listen.map((spec, i) => {
      const port = settings.ports[i]
      return spec.endpoint._tag === "Tcp" && port !== null && port !== undefined
        ? { ...spec, endpoint: { ...spec.endpoint, port } }
        : spec
    })
    const listening: Array<Listening> = []
    const emit = (event: DevServer.Event) =>
      Effect.sync(() => {
        if (event.event === "listening") listening.push(event)
        else if (events) send({ type: "event", event })
      })
    // The supervisor is gone (killed): shut down as on SIGTERM.
    process.once("disconnect", () => process.kill(process.pid, "SIGTERM"))
    return yield* Effect.scoped(Effect.gen(function*() {
      const admit = yield* fleetAdmission(options.server.domain ?? "localhost")
      yield* Layer.build(DevServer.layer(
        { ...options, emit, admit, server: { ...options.server, listen } },
        Layer.effect(Network, workerNetwork)
      ))
      send({ type: "ready", listening })
      return yield* Effect.never
    }))
  })
