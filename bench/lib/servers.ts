/**
 * Servers taking smtp-source's load: the Node servers under test (benchmark children) and
 * Postfix's smtp-sink, started fresh, warmed up, and measured run by run from /proc: the wall
 * time of smtp-source from spawn to exit, the server's CPU time and peak RSS (VmHWM, reset
 * before each run), the load generator's CPU time. A run where a message or a byte is
 * missing, or where smtp-source reports an error, fails.
 */
import { type Program, startProgram } from "./programs.ts"
import {
  awaitGreeting,
  bytesRead,
  cpuSeconds,
  endedChildrenCpuSeconds,
  freePort,
  peakRssBytes,
  pinned,
  pinning,
  resetPeakRss,
  rssBytes,
  runToEnd,
  spawnTracked
} from "./proc.ts"
import { median } from "./report.ts"

export const SMTP_SOURCE = "/usr/sbin/smtp-source"
export const SMTP_SINK = "/usr/sbin/smtp-sink"

const MiB = 1024 * 1024

interface Received {
  readonly messages: number
  readonly bytes: number
  /** The server's monotonic clock (µs), as in its CPU profile. */
  readonly clockUs: number
}

/** A server taking load: where it listens, its process, and what it has received so far. */
export interface Target {
  readonly port: number
  readonly pid: number
  /** Every process of the server (a supervisor and its workers), when it is more than `pid`. */
  readonly pids?: (() => ReadonlyArray<number>) | undefined
  /** Messages and body bytes received so far (smtp-sink: bytes read from /proc, no message count). */
  readonly received: () => Promise<Received>
  /** A full garbage collection, where the server allows it (before RSS is measured). */
  readonly collect: () => Promise<void>
  readonly stop: () => Promise<void>
}

interface StartOptions {
  readonly mode: "sink" | "hash"
  /** Connections allowed in all and per IP (undefined: the server's defaults). */
  readonly connections?: number | undefined
  readonly core?: number | undefined
  readonly nodeArgs?: ReadonlyArray<string> | undefined
}

/** A server the suites can start: a name for the tables and how to start it. */
export interface ServerSpec {
  readonly name: string
  readonly start: (options: StartOptions) => Promise<Target>
}

/** A Node server in a benchmark child (servers/*.ts). */
export const nodeServer = (program: Program): ServerSpec => ({
  name: program.name,
  start: async (options) => {
    const { child, ready } = await startProgram(program, {
      core: options.core ?? pinning.measured,
      gc: true,
      args: [options.mode, ...(options.connections !== undefined ? ["--connections", String(options.connections)] : [])],
      nodeArgs: options.nodeArgs ?? []
    })
    return {
      port: Number(ready.port),
      pid: child.pid,
      received: async () => {
        const s = await child.request({ type: "stats" })
        return { messages: Number(s.messages), bytes: Number(s.bytes), clockUs: Number(s.clockUs) }
      },
      collect: async () => {
        await child.request({ type: "gc" })
      },
      stop: () => child.stop()
    }
  }
})

/** Postfix's smtp-sink: it cannot bind port 0 and report it, so a free port is picked first. */
export const startSmtpSink = async (core: number): Promise<Target> => {
  for (let attempt = 1;; attempt++) {
    const port = await freePort()
    // As root, smtp-sink insists on dropping privileges to a user (-u).
    const asRoot = process.getuid?.() === 0 ? ["-u", "nobody"] : []
    // -a: no AUTH offered; up to 512 connections; a listen backlog of 1024.
    const argv = pinned(core, [SMTP_SINK, ...asRoot, "-a", "-m", "512", `127.0.0.1:${port}`, "1024"])
    const proc = spawnTracked(argv, { stdio: ["ignore", "ignore", "inherit"] })
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()))
    try {
      await Promise.race([
        awaitGreeting(port, 10_000),
        exited.then(() => Promise.reject(new Error("smtp-sink exited")))
      ])
      // taskset execs smtp-sink in place, so the pid is smtp-sink's.
      const pid = proc.pid!
      return {
        port,
        pid,
        received: () => Promise.resolve({ messages: NaN, bytes: bytesRead(pid), clockUs: NaN }),
        collect: () => Promise.resolve(),
        stop: async () => {
          proc.kill("SIGTERM")
          const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000)
          await exited
          clearTimeout(timer)
        }
      }
    } catch (e) {
      proc.kill("SIGKILL")
      if (attempt === 3) throw e
    }
  }
}

export const smtpSink: ServerSpec = { name: "smtp-sink", start: (o) => startSmtpSink(o.core ?? pinning.measured) }

/** One smtp-source load: `sessions` in parallel, `messages` in all, each `size` bytes of payload. */
export interface Load {
  /** `-d`: every session sends its messages over one connection (else a connection per message). */
  readonly keepConnection: boolean
  readonly sessions: number
  readonly messages: number
  readonly size: number
}

/** smtp-source's flags for a load, in the issue's order (HELO, no pipelining: smtp-source's only way). */
export const sourceFlags = (load: Load): Array<string> => [
  ...(load.keepConnection ? ["-d"] : []),
  "-s",
  String(load.sessions),
  "-m",
  String(load.messages),
  "-l",
  String(load.size)
]

const sourceArgv = (load: Load, port: number) => [
  SMTP_SOURCE,
  ...sourceFlags(load),
  "-M", // the name in HELO and in the default sender and recipient; nothing else changes
  "bench.invalid",
  `127.0.0.1:${port}`
]

/** What one measured run saw. */
export interface Run {
  readonly wallSeconds: number
  readonly cpuSeconds: number
  /** CPU time of smtp-source: near its wall time, the load generator was the limit. */
  readonly loadCpuSeconds: number
  /** RSS just before the run (after a full GC), and the highest RSS during it. */
  readonly rssBefore: number
  readonly peakRss: number
  readonly messages: number
  readonly bytes: number
  /** The run on the server's clock (µs), when the server tells it. */
  readonly window: readonly [number, number] | undefined
}

/**
 * Sends one load with smtp-source (on the load core, or on any with `pinLoad` false) and
 * measures the server while it takes it: CPU and memory summed over all its processes.
 */
export const measure = async (target: Target, load: Load, timeoutMs: number, pinLoad = true): Promise<Run> => {
  await target.collect()
  const pids = target.pids?.() ?? [target.pid]
  const sum = (f: (pid: number) => number) => pids.reduce((n, pid) => n + f(pid), 0)
  const before = await target.received()
  const rssBefore = sum(rssBytes)
  for (const pid of pids) resetPeakRss(pid)
  const cpu0 = sum(cpuSeconds)
  const load0 = endedChildrenCpuSeconds()
  const argv = sourceArgv(load, target.port)
  const done = await runToEnd(pinLoad ? pinned(pinning.load, argv) : argv, timeoutMs)
  const loadCpu = endedChildrenCpuSeconds() - load0
  const after = await target.received() // also lets the server finish the last reply's work
  const cpu1 = sum(cpuSeconds)
  const peakRss = sum(peakRssBytes)
  if (done.code !== 0 || done.output.trim() !== "") {
    throw new Error(`smtp-source failed (${done.code ?? done.signal}): ${done.output.trim().slice(0, 500)}`)
  }
  const counted = Number.isFinite(before.messages)
  const messages = counted ? after.messages - before.messages : load.messages
  const bytes = after.bytes - before.bytes
  if (messages !== load.messages) throw new Error(`server received ${messages} of ${load.messages} messages`)
  if (bytes < load.messages * load.size) throw new Error(`server received ${bytes} bytes, expected at least ${load.messages * load.size}`)
  const window = counted ? [before.clockUs, after.clockUs] as const : undefined
  return { wallSeconds: done.wallSeconds, cpuSeconds: cpu1 - cpu0, loadCpuSeconds: loadCpu, rssBefore, peakRss, messages, bytes, window }
}

/**
 * Warm-up of every fresh server: enough for the JIT and the heap to settle (first runs after
 * less were visibly slower), on both paths a case can take (a connection kept, a new one per
 * message) and through large bodies.
 */
const warmUps: ReadonlyArray<Load> = [
  { keepConnection: true, sessions: 8, messages: 4000, size: 1024 },
  { keepConnection: false, sessions: 8, messages: 500, size: 1024 },
  { keepConnection: true, sessions: 1, messages: 2, size: 8 * MiB }
]

/** Results of one server on one case: the idle RSS and every measured run. */
export interface CaseResult {
  readonly server: string
  readonly runs: ReadonlyArray<Run>
}

/**
 * Runs one load against several servers: each in a fresh process, warmed up, then measured
 * `reps` times, taking turns (A B C A B C…) so a slow spell of the machine hits all alike.
 */
export const runCase = async (
  servers: ReadonlyArray<ServerSpec>,
  options: {
    readonly mode: "sink" | "hash"
    readonly load: Load
    readonly reps: number
    readonly timeoutMs: number
    /** Default true: smtp-source on the load core. */
    readonly pinLoad?: boolean | undefined
  }
): Promise<Array<CaseResult>> => {
  const targets: Array<Target> = []
  const pinLoad = options.pinLoad ?? true
  try {
    for (const spec of servers) {
      const target = await spec.start({ mode: options.mode })
      targets.push(target)
      for (const w of warmUps) await measure(target, w, 120_000, pinLoad)
    }
    const runs: Array<Array<Run>> = servers.map(() => [])
    for (let i = 0; i < options.reps; i++) {
      for (let j = 0; j < targets.length; j++) runs[j]!.push(await measure(targets[j]!, options.load, options.timeoutMs, pinLoad))
    }
    return servers.map((spec, j) => ({ server: spec.name, runs: runs[j]! }))
  } finally {
    for (const t of targets) await t.stop()
  }
}

/** Median throughput, CPU per message, CPU use and peak RSS of a case. */
export const summarize = (r: CaseResult, unit: "msg/s" | "MB/s") => ({
  rate: median(r.runs.map((x) => unit === "msg/s" ? x.messages / x.wallSeconds : x.bytes / 1e6 / x.wallSeconds)),
  cpuPerMessage: median(r.runs.map((x) => x.cpuSeconds / x.messages)),
  cpuShare: median(r.runs.map((x) => x.cpuSeconds / x.wallSeconds)),
  loadShare: median(r.runs.map((x) => x.loadCpuSeconds / x.wallSeconds)),
  peakRss: median(r.runs.map((x) => x.peakRss)),
  peakGrowth: median(r.runs.map((x) => x.peakRss - x.rssBefore))
})

export type Summary = ReturnType<typeof summarize>
