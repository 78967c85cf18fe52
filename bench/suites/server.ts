/**
 * The server cases: Postfix's smtp-source (on one core) sends the loads to
 * effect-smtp's server, to nodemailer's smtp-server and to Postfix's smtp-sink (each on the
 * other core, a fresh process per case), taking turns, median of `reps` runs.
 */
import { type Program } from "../lib/programs.ts"
import { format, type Row, type Target } from "../lib/report.ts"
import { type Load, nodeServer, runCase, type ServerSpec, smtpSink, sourceFlags, summarize, type Summary } from "../lib/servers.ts"

const MiB = 1024 * 1024

export interface ServerCase {
  readonly id: string
  readonly label: string
  readonly load: Load
  readonly unit: "msg/s" | "MB/s"
  /** The targets for this case (undefined: reported without one). */
  readonly targets: {
    readonly vsSmtpServer?: Target
    readonly vsSmtpSink?: Target
    readonly cpuVsSmtpServer?: Target
  }
}

const atLeast = (value: number): Target => ({ on: "ratio", op: ">=", value })
const atMost = (value: number): Target => ({ on: "ratio", op: "<=", value })

const scaled = (n: number, scale: number) => Math.max(1, Math.round(n * scale))

/** The cases, with its exact smtp-source flags (message counts × `scale`). */
export const serverCases = (scale: number): ReadonlyArray<ServerCase> => [
  {
    id: "a",
    label: "a) 1 session, 1 KiB",
    load: { keepConnection: true, sessions: 1, messages: scaled(20000, scale), size: 1024 },
    unit: "msg/s",
    targets: { vsSmtpSink: atLeast(0.97) } // bound by the round trip: one command at a time
  },
  {
    id: "b",
    label: "b) 32 sessions, 1 KiB",
    load: { keepConnection: true, sessions: 32, messages: scaled(40000, scale), size: 1024 },
    unit: "msg/s",
    targets: { vsSmtpServer: atLeast(1.3), cpuVsSmtpServer: atMost(0.8) }
  },
  {
    id: "c",
    label: "c) 8 sessions, 100 KiB",
    load: { keepConnection: true, sessions: 8, messages: scaled(5000, scale), size: 100 * 1024 },
    unit: "MB/s",
    // The issue asks ≥ 1.3× smtp-server; the lead decided on smtp-sink: smtp-source itself is the limit here.
    targets: { vsSmtpSink: atLeast(0.97) }
  },
  {
    id: "d",
    label: "d) one 100 MiB message",
    load: { keepConnection: true, sessions: 1, messages: 1, size: 100 * MiB },
    unit: "MB/s",
    targets: { vsSmtpServer: atLeast(1.3) }
  },
  {
    id: "e",
    label: "e) 32 sessions, a connection per message",
    load: { keepConnection: false, sessions: 32, messages: scaled(10000, scale), size: 1024 },
    unit: "msg/s",
    targets: { vsSmtpSink: atLeast(0.6) }
  }
]

const log = (s: string) => process.stderr.write(`${s}\n`)
const pct = (x: number) => `${Math.round(x * 100)}`
const peakRssTarget: Target = atMost(1) // peak RSS at most smtp-server's in every scenario

/** The rows of one case; `extra` are labelled variants (the esbuild bundle, the plain-Node floor) without targets. */
const caseRows = (c: ServerCase, ours: Summary, peer: Summary, sink: Summary, extra: ReadonlyArray<[string, Summary]>): Array<Row> => {
  const base = { suite: "server", id: c.id, case: `${c.label} (\`${sourceFlags(c.load).join(" ")}\`)` } as const
  const busy = `smtp-source busy ${pct(ours.loadShare)} / ${pct(peer.loadShare)} / ${pct(sink.loadShare)} % (effect-smtp / smtp-server / smtp-sink runs)`
  const rows: Array<Row> = [
    { ...base, metric: "throughput", unit: c.unit, ours: ours.rate, peerName: "smtp-server", peer: peer.rate, target: c.targets.vsSmtpServer, note: busy },
    { ...base, metric: "throughput", unit: c.unit, ours: ours.rate, peerName: "smtp-sink (C)", peer: sink.rate, target: c.targets.vsSmtpSink },
    {
      ...base,
      metric: "server CPU per msg",
      unit: "cpu",
      ours: ours.cpuPerMessage,
      peerName: "smtp-server",
      peer: peer.cpuPerMessage,
      target: c.targets.cpuVsSmtpServer,
      note: `smtp-sink ${format(sink.cpuPerMessage, "cpu")}; server busy ${pct(ours.cpuShare)} / ${pct(peer.cpuShare)} / ${pct(sink.cpuShare)} %`
    },
    { ...base, metric: "peak RSS", unit: "bytes", ours: ours.peakRss, peerName: "smtp-server", peer: peer.peakRss, target: peakRssTarget }
  ]
  for (const [name, x] of extra) {
    const label = { ...base, case: `${base.case} [${name}]` }
    rows.push(
      { ...label, metric: "throughput", unit: c.unit, ours: x.rate, peerName: "smtp-server", peer: peer.rate, note: `extra row, ${name}` },
      { ...label, metric: "server CPU per msg", unit: "cpu", ours: x.cpuPerMessage, peerName: "smtp-server", peer: peer.cpuPerMessage },
      { ...label, metric: "peak RSS", unit: "bytes", ours: x.peakRss, peerName: "smtp-server", peer: peer.peakRss }
    )
  }
  return rows
}

export const serverSuite = async (programs: {
  readonly ours: Program
  readonly peer: Program
  readonly extra: ReadonlyArray<Program>
}, options: { readonly reps: number; readonly scale: number; readonly ids: (id: string) => boolean }): Promise<{
  readonly rows: Array<Row>
  readonly raw: Array<unknown>
}> => {
  const rows: Array<Row> = []
  const raw: Array<unknown> = []
  const extra = programs.extra.map(nodeServer)
  const servers: ReadonlyArray<ServerSpec> = [nodeServer(programs.ours), nodeServer(programs.peer), smtpSink, ...extra]
  for (const c of serverCases(options.scale).filter((x) => options.ids(x.id))) {
    log(`server ${c.label}: smtp-source ${sourceFlags(c.load).join(" ")}…`)
    const results = await runCase(servers, {
      mode: "sink",
      load: c.load,
      reps: options.reps,
      timeoutMs: 600_000
    })
    raw.push({ case: c.id, flags: sourceFlags(c.load), results })
    const [ours, peer, sink, ...others] = results.map((r) => summarize(r, c.unit))
    rows.push(...caseRows(c, ours!, peer!, sink!, others.map((x, i) => [extra[i]!.name, x] as [string, Summary])))
  }
  return { rows, raw }
}
