/**
 * Server benchmarks: Postfix's smtp-source sends to effect-smtp's server and to smtp-server,
 * each in its own process, pinned to its own core; smtp-sink (Postfix's C sink) runs the same
 * load as a reference for what the load generator can do.
 *
 * Per case and server: a fresh server process, a warm-up, then `reps` measured runs. Each run
 * times smtp-source from spawn to exit and reads the server's CPU time and peak RSS from /proc.
 */
import { spawn } from "node:child_process"
import {
  awaitGreeting,
  cpuSeconds,
  endedChildrenCpuSeconds,
  freePort,
  NodeChild,
  peakRssBytes,
  pinned,
  pinning,
  resetPeakRss,
  rssBytes,
  runToEnd
} from "../lib/proc.ts"
import { median, type Row } from "../lib/report.ts"

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
  /** Messages and body bytes received so far (undefined: the server cannot tell). */
  readonly received: () => Promise<Received | undefined>
  /** A full garbage collection, where the server allows it (before RSS is measured). */
  readonly collect: () => Promise<void>
  readonly stop: () => Promise<void>
}

/** A server the suites can start: a name for the tables and how to start it. */
export interface ServerSpec {
  readonly name: string
  readonly start: (mode: "sink" | "hash") => Promise<Target>
}

/** A Node server in a benchmark child (see servers/*.ts), from a bundle or from sources. */
export const nodeServer = (name: string, script: string, nodeArgs: ReadonlyArray<string> = []): ServerSpec => ({
  name,
  start: async (mode) => {
    const { child, ready } = await NodeChild.start({ script, args: [mode], nodeArgs: ["--expose-gc", ...nodeArgs], core: pinning.measured })
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
    const argv = pinned(core, [SMTP_SINK, ...asRoot, "-a", "-m", "512", `127.0.0.1:${port}`, "1024"])
    const proc = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "inherit"] })
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()))
    try {
      await Promise.race([
        awaitGreeting(port, 10_000),
        exited.then(() => Promise.reject(new Error("smtp-sink exited")))
      ])
      return {
        port,
        pid: proc.pid!,
        received: () => Promise.resolve(undefined),
        collect: () => Promise.resolve(),
        stop: async () => {
          proc.kill("SIGTERM")
          await exited
        }
      }
    } catch (e) {
      proc.kill("SIGKILL")
      if (attempt === 3) throw e
    }
  }
}

export const smtpSink: ServerSpec = { name: "smtp-sink", start: () => startSmtpSink(pinning.measured) }

/** One smtp-source load: `sessions` in parallel, `messages` in all, each `size` bytes of payload. */
export interface Load {
  readonly sessions: number
  readonly messages: number
  readonly size: number
}

const sourceArgs = (load: Load, port: number) => [
  SMTP_SOURCE,
  "-s",
  String(load.sessions),
  "-m",
  String(load.messages),
  "-l",
  String(load.size),
  "-d", // every session sends its messages over one connection
  "-M",
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

/** Sends one load and measures the server while it takes it. */
const measure = async (target: Target, load: Load, timeoutMs: number): Promise<Run> => {
  await target.collect()
  const before = await target.received()
  const rssBefore = rssBytes(target.pid)
  resetPeakRss(target.pid)
  const cpu0 = cpuSeconds(target.pid)
  const load0 = endedChildrenCpuSeconds()
  const done = await runToEnd(pinned(pinning.load, sourceArgs(load, target.port)), timeoutMs)
  const loadCpu = endedChildrenCpuSeconds() - load0
  const after = await target.received() // also lets the server finish the last reply's work
  const cpu1 = cpuSeconds(target.pid)
  const peakRss = peakRssBytes(target.pid)
  if (done.code !== 0) throw new Error(`smtp-source failed (${done.code ?? done.signal}): ${done.output.trim().slice(0, 500)}`)
  const messages = before && after ? after.messages - before.messages : load.messages
  const bytes = before && after ? after.bytes - before.bytes : load.messages * load.size
  if (messages !== load.messages) throw new Error(`server received ${messages} of ${load.messages} messages`)
  if (bytes < load.messages * load.size) throw new Error(`server received ${bytes} bytes, expected at least ${load.messages * load.size}`)
  const window = before && after ? [before.clockUs, after.clockUs] as const : undefined
  return { wallSeconds: done.wallSeconds, cpuSeconds: cpu1 - cpu0, loadCpuSeconds: loadCpu, rssBefore, peakRss, messages, bytes, window }
}

// Enough for the JIT and the heap to settle: first runs after less were visibly slower.
const warmUps: ReadonlyArray<Load> = [
  { sessions: 8, messages: 4000, size: 1024 },
  { sessions: 1, messages: 2, size: 8 * MiB }
]

/** Results of one server on one case: the idle RSS and every measured run. */
export interface CaseResult {
  readonly server: string
  readonly idleRss: number
  readonly runs: ReadonlyArray<Run>
}

/**
 * Runs one load against several servers: each in a fresh process, warmed up, then measured
 * `reps` times, taking turns (A B C A B C…) so a slow spell of the machine hits all alike.
 */
export const runCase = async (
  servers: ReadonlyArray<ServerSpec>,
  options: { readonly mode: "sink" | "hash"; readonly load: Load; readonly reps: number; readonly timeoutMs: number }
): Promise<Array<CaseResult>> => {
  const targets: Array<Target> = []
  try {
    const idle: Array<number> = []
    for (const spec of servers) {
      const target = await spec.start(options.mode)
      targets.push(target)
      idle.push(rssBytes(target.pid))
      for (const w of warmUps) await measure(target, w, 60_000)
    }
    const runs: Array<Array<Run>> = servers.map(() => [])
    for (let i = 0; i < options.reps; i++) {
      for (let j = 0; j < targets.length; j++) runs[j]!.push(await measure(targets[j]!, options.load, options.timeoutMs))
    }
    return servers.map((spec, j) => ({ server: spec.name, idleRss: idle[j]!, runs: runs[j]! }))
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
  peakGrowth: median(r.runs.map((x) => x.peakRss - x.rssBefore)),
  idleRss: r.idleRss
})

export interface ServerCase {
  readonly id: string
  readonly label: string
  readonly load: Load
  readonly unit: "msg/s" | "MB/s"
}

export const serverCases = (scale: number): ReadonlyArray<ServerCase> => [
  { id: "1x1k", label: "1 session × 1 KiB msgs", load: { sessions: 1, messages: Math.round(5000 * scale), size: 1024 }, unit: "msg/s" },
  { id: "32x1k", label: "32 sessions × 1 KiB msgs", load: { sessions: 32, messages: Math.round(20000 * scale), size: 1024 }, unit: "msg/s" },
  { id: "100m", label: "one 100 MiB msg", load: { sessions: 1, messages: 1, size: 100 * MiB }, unit: "MB/s" }
]

const log = (s: string) => process.stderr.write(`${s}\n`)

/** Suite 1: throughput, CPU per message and RSS of the two servers under the same load. */
export const serverSuite = async (servers: {
  readonly ours: ServerSpec
  readonly peer: ServerSpec
}, reps: number, scale: number): Promise<{
  readonly rows: Array<Row>
  readonly raw: Array<{ readonly case: string; readonly results: ReadonlyArray<CaseResult> }>
}> => {
  const rows: Array<Row> = []
  const raw: Array<{ case: string; results: ReadonlyArray<CaseResult> }> = []
  for (const c of serverCases(scale)) {
    log(`server: ${c.label} (${c.load.messages} × ${c.load.size} bytes, ${c.load.sessions} session(s))…`)
    const results = await runCase([servers.ours, servers.peer, smtpSink], { mode: "sink", load: c.load, reps, timeoutMs: 120_000 })
    raw.push({ case: c.id, results })
    const [ours, peer, sink] = results.map((r) => summarize(r, c.unit)) as [
      ReturnType<typeof summarize>,
      ReturnType<typeof summarize>,
      ReturnType<typeof summarize>
    ]
    const base = { suite: "server", case: c.label, peerName: "smtp-server" } as const
    rows.push(
      {
        ...base,
        metric: "throughput",
        unit: c.unit,
        ours: ours.rate,
        peer: peer.rate,
        note: `smtp-sink (C): ${Math.round(sink.rate).toLocaleString("en-US")} ${c.unit}; ` +
          `smtp-source busy ${Math.round(ours.loadShare * 100)} / ${Math.round(peer.loadShare * 100)} %`
      },
      { ...base, metric: "server CPU per msg", unit: "cpu", ours: ours.cpuPerMessage, peer: peer.cpuPerMessage, note: `server busy ${Math.round(ours.cpuShare * 100)} / ${Math.round(peer.cpuShare * 100)} %` },
      { ...base, metric: "peak RSS", unit: "bytes", ours: ours.peakRss, peer: peer.peakRss }
    )
    if (c.id === "1x1k") rows.unshift({ ...base, case: "idle (after start)", metric: "RSS", unit: "bytes", ours: ours.idleRss, peer: peer.idleRss })
  }
  return { rows, raw }
}

/** Suite 3: memory while a 1 GiB message is streamed into a hashing backend. */
export const memorySuite = async (servers: {
  readonly ours: ServerSpec
  readonly peer: ServerSpec
}, reps: number): Promise<{
  readonly rows: Array<Row>
  readonly raw: ReadonlyArray<CaseResult>
}> => {
  const load: Load = { sessions: 1, messages: 1, size: 1024 * MiB }
  log("memory: one 1 GiB message into a hashing backend…")
  // A fresh process for every run: a heap already grown by an earlier run would hide the growth.
  const runs: Array<Array<CaseResult>> = []
  for (let i = 0; i < reps; i++) runs.push(await runCase([servers.ours, servers.peer], { mode: "hash", load, reps: 1, timeoutMs: 180_000 }))
  const results = [0, 1].map((j): CaseResult => ({
    server: runs[0]![j]!.server,
    idleRss: median(runs.map((r) => r[j]!.idleRss)),
    runs: runs.flatMap((r) => r[j]!.runs)
  }))
  const [ours, peer] = results.map((r) => summarize(r, "MB/s")) as [ReturnType<typeof summarize>, ReturnType<typeof summarize>]
  const base = { suite: "memory", case: "one 1 GiB msg, SHA-256", peerName: "smtp-server" } as const
  return {
    rows: [
      { ...base, metric: "RSS growth (peak − after GC)", unit: "bytes", ours: ours.peakGrowth, peer: peer.peakGrowth },
      { ...base, metric: "peak RSS", unit: "bytes", ours: ours.peakRss, peer: peer.peakRss },
      { ...base, metric: "throughput", unit: "MB/s", ours: ours.rate, peer: peer.rate },
      { ...base, metric: "server CPU per msg", unit: "cpu", ours: ours.cpuPerMessage, peer: peer.cpuPerMessage }
    ],
    raw: results
  }
}
