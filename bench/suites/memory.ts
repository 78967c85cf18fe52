/**
 * The memory cases: idle RSS right after start (the way the README starts a server, and with
 * NodeRuntime imported by subpath) against smtp-server; 10,000 idle connections held open
 * (RSS per connection, and a good client's whole transaction timed meanwhile); and one 1 GiB
 * message streamed into a hashing backend (RSS growth).
 */
import { type Program, startProgram } from "../lib/programs.ts"
import { NodeChild, openFileLimit, peakRssBytes, pinning, resetPeakRss, rssBytes } from "../lib/proc.ts"
import { median, type Row, type Target } from "../lib/report.ts"
import { type CaseResult, type Load, measure, nodeServer, runCase, sourceFlags, summarize } from "../lib/servers.ts"

const KiB = 1024
const MiB = 1024 * 1024
const log = (s: string) => process.stderr.write(`${s}\n`)
const atMost = (value: number): Target => ({ on: "ratio", op: "<=", value })

export const memoryCaseIds = ["idle", "conns", "1g"] as const

/** Idle RSS right after start: a fresh process per run, as a user starts it (no --expose-gc). */
const idleCase = async (programs: ReadonlyArray<Program>, reps: number): Promise<Array<Array<number>>> => {
  const rss: Array<Array<number>> = programs.map(() => [])
  for (let i = 0; i < reps; i++) {
    for (let j = 0; j < programs.length; j++) {
      const { child } = await startProgram(programs[j]!, { core: pinning.measured, args: ["sink"] })
      try {
        rss[j]!.push(rssBytes(child.pid))
      } finally {
        await child.stop()
      }
    }
  }
  return rss
}

interface ConnsRun {
  readonly baseline: number
  readonly held: number
  readonly peak: number
  readonly perConnection: number
  readonly transactions: ReadonlyArray<number>
  readonly openSeconds: number
}

const TRANSACTIONS = 5
const warmUp: Load = { keepConnection: true, sessions: 8, messages: 2000, size: 1024 }

/**
 * `count` idle connections held by a client child on the load core: the server's RSS after a
 * full GC before and while they are held, its peak meanwhile, then `TRANSACTIONS` good
 * transactions timed one after the other. Every connection must still be open at the end.
 */
const connsRun = async (program: Program, holderScript: string, count: number): Promise<ConnsRun> => {
  const target = await nodeServer(program).start({ mode: "sink", connections: count + 1000 })
  let holder: NodeChild | undefined
  try {
    await measure(target, warmUp, 120_000)
    holder = (await NodeChild.start({ script: holderScript, core: pinning.load })).child
    await holder.request({ type: "transaction", port: target.port }) // the path warm
    const before = await target.received()
    await target.collect()
    const baseline = rssBytes(target.pid)
    resetPeakRss(target.pid)
    const opened = await holder.request({ type: "hold", port: target.port, count }, 300_000)
    if (Number(opened.held) !== count) throw new Error(`${program.name}: ${opened.held} of ${count} connections held`)
    await target.collect()
    const held = rssBytes(target.pid)
    const transactions: Array<number> = []
    for (let i = 0; i < TRANSACTIONS; i++) {
      transactions.push(Number((await holder.request({ type: "transaction", port: target.port })).seconds))
    }
    const peak = peakRssBytes(target.pid)
    const status = await holder.request({ type: "status" })
    if (Number(status.held) !== count || Number(status.closedByServer) !== 0) {
      throw new Error(`${program.name}: the server closed ${status.closedByServer} of the ${count} idle connections`)
    }
    const after = await target.received()
    if (after.messages - before.messages !== TRANSACTIONS) {
      throw new Error(`${program.name}: received ${after.messages - before.messages} of ${TRANSACTIONS} messages`)
    }
    await holder.request({ type: "release" })
    return { baseline, held, peak, perConnection: (held - baseline) / count, transactions, openSeconds: Number(opened.seconds) }
  } finally {
    await holder?.stop()
    await target.stop()
  }
}

const summarizeConns = (runs: ReadonlyArray<ConnsRun>) => ({
  perConnection: median(runs.map((r) => r.perConnection)),
  peak: median(runs.map((r) => r.peak)),
  transaction: median(runs.map((r) => median(r.transactions))),
  slowest: Math.max(...runs.flatMap((r) => r.transactions)),
  openSeconds: median(runs.map((r) => r.openSeconds))
})

export const memorySuite = async (programs: {
  readonly ours: Program
  readonly oursIndex: Program
  readonly peer: Program
  readonly holder: string
  readonly extra: ReadonlyArray<Program>
}, options: { readonly reps: number; readonly scale: number; readonly ids: (id: string) => boolean }): Promise<{
  readonly rows: Array<Row>
  readonly raw: Record<string, unknown>
}> => {
  const rows: Array<Row> = []
  const raw: Record<string, unknown> = {}
  const { reps } = options

  if (options.ids("idle")) {
    log("memory idle: RSS right after start…")
    const variants = [programs.ours, programs.oursIndex, ...programs.extra]
    const rss = await idleCase([programs.peer, ...variants], reps)
    raw.idle = Object.fromEntries([programs.peer, ...variants].map((p, j) => [p.name, rss[j]]))
    const peer = median(rss[0]!)
    const labels = [
      "idle RSS after start, as the README starts it (imports by module path)",
      "idle RSS after start, with the packages' index imports (`import { Layer } from \"effect\"`)",
      ...programs.extra.map((p) => `idle RSS after start [${p.name}]`)
    ]
    variants.forEach((_, j) =>
      rows.push({
        suite: "memory",
        id: "idle",
        case: labels[j]!,
        metric: "RSS",
        unit: "bytes",
        ours: median(rss[j + 1]!),
        peerName: "smtp-server",
        peer,
        target: j < 1 ? atMost(1) : undefined
      })
    )
  }

  if (options.ids("conns")) {
    const count = Math.max(100, Math.round(10_000 * options.scale))
    const limit = openFileLimit()
    if (limit < count + 200) throw new Error(`open files are limited to ${limit}: raise it (ulimit -n ${count + 1000}; npm run bench does)`)
    log(`memory conns: ${count.toLocaleString("en-US")} idle connections held…`)
    const runs: Array<Array<ConnsRun>> = [[], []]
    for (let i = 0; i < reps; i++) {
      runs[0]!.push(await connsRun(programs.ours, programs.holder, count))
      runs[1]!.push(await connsRun(programs.peer, programs.holder, count))
    }
    raw.conns = { count, runs }
    const [ours, peer] = [summarizeConns(runs[0]!), summarizeConns(runs[1]!)]
    const base = { suite: "memory", id: "conns", case: `${count.toLocaleString("en-US")} idle connections held`, peerName: "smtp-server" } as const
    rows.push(
      {
        ...base,
        metric: "RSS per idle connection (after GC)",
        unit: "bytes",
        ours: ours.perConnection,
        peer: peer.perConnection,
        target: { on: "value", op: "<=", value: 10 * KiB },
        note: `opened in ${ours.openSeconds.toFixed(1)} / ${peer.openSeconds.toFixed(1)} s`
      },
      { ...base, metric: "peak RSS while held", unit: "bytes", ours: ours.peak, peer: peer.peak, target: atMost(1) },
      {
        ...base,
        metric: `a good client's transaction meanwhile (median of ${TRANSACTIONS})`,
        unit: "seconds",
        ours: ours.transaction,
        peer: peer.transaction,
        target: { on: "value", op: "<", value: 0.05 },
        note: `slowest ${(ours.slowest * 1e3).toFixed(1)} / ${(peer.slowest * 1e3).toFixed(1)} ms`
      }
    )
  }

  if (options.ids("1g")) {
    const load: Load = { keepConnection: true, sessions: 1, messages: 1, size: 1024 * MiB }
    log("memory 1g: one 1 GiB message into a hashing backend…")
    // A fresh process for every run: a heap already grown by an earlier run would hide the growth.
    const servers = [nodeServer(programs.ours), nodeServer(programs.peer)]
    const runs: Array<Array<CaseResult>> = []
    for (let i = 0; i < reps; i++) runs.push(await runCase(servers, { mode: "hash", load, reps: 1, timeoutMs: 600_000 }))
    const results = [0, 1].map((j): CaseResult => ({ server: servers[j]!.name, runs: runs.flatMap((r) => r[j]!.runs) }))
    raw["1g"] = results
    const [ours, peer] = results.map((r) => summarize(r, "MB/s"))
    const base = { suite: "memory", id: "1g", case: `one 1 GiB message, SHA-256 (\`${sourceFlags(load).join(" ")}\`)`, peerName: "smtp-server" } as const
    rows.push(
      { ...base, metric: "RSS growth (peak − before, after GC)", unit: "bytes", ours: ours!.peakGrowth, peer: peer!.peakGrowth, target: atMost(1) },
      { ...base, metric: "peak RSS", unit: "bytes", ours: ours!.peakRss, peer: peer!.peakRss, target: atMost(1) },
      { ...base, metric: "throughput", unit: "MB/s", ours: ours!.rate, peer: peer!.rate },
      { ...base, metric: "server CPU per msg", unit: "cpu", ours: ours!.cpuPerMessage, peer: peer!.cpuPerMessage }
    )
  }
  return { rows, raw }
}
