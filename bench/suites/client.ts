/**
 * The client cases: effect-smtp's client and nodemailer's, each in its own process on the
 * measured core, send the same pre-built message to a server on the other core: Postfix's
 * smtp-sink, or effect-smtp's own server (which offers PIPELINING and CHUNKING; smtp-sink
 * offers no CHUNKING). Each client is warmed up, then the two take turns for `reps` runs.
 * Every message must be accepted, and the server must have read every byte.
 */
import type { SendAnswer, SendRequest } from "../lib/message.ts"
import { type Program, startProgram } from "../lib/programs.ts"
import { cpuSeconds as cpuOf, NodeChild, peakRssBytes, pinning, resetPeakRss } from "../lib/proc.ts"
import { median, type Row, type Target } from "../lib/report.ts"
import { nodeServer, startSmtpSink, type Target as Server } from "../lib/servers.ts"

const MiB = 1024 * 1024

export interface ClientCase {
  readonly id: string
  readonly label: string
  readonly oursLabel: string
  readonly peerLabel: string
  readonly server: "smtp-sink" | "effect-smtp"
  readonly request: Omit<SendRequest, "port">
  readonly unit: "msg/s" | "MB/s"
  /** Undefined: an extra row without targets. */
  readonly targets?: { readonly throughput: Target; readonly cpu: Target; readonly peakRss: Target } | undefined
}

const atLeast = (value: number): Target => ({ on: "ratio", op: ">=", value })
const atMost = (value: number): Target => ({ on: "ratio", op: "<=", value })
const scaled = (n: number, scale: number) => Math.max(1, Math.round(n * scale))
/** Client CPU per message ≤ 0.8× nodemailer's, peak RSS at most nodemailer's: every case. */
const targets = (throughput: number) => ({ throughput: atLeast(throughput), cpu: atMost(0.8), peakRss: atMost(1) })

export const clientCases = (scale: number): ReadonlyArray<ClientCase> => [
  {
    id: "client-one",
    label: "1 KiB, one connection, to smtp-sink",
    oursLabel: "`SmtpClient.connect` + `client.send`",
    peerLabel: "nodemailer `SMTPConnection.send`",
    server: "smtp-sink",
    request: { mode: "one", connections: 1, messages: scaled(20000, scale), size: 1024 },
    unit: "msg/s",
    targets: targets(1.2)
  },
  {
    id: "client-pool",
    label: "1 KiB, 32 in flight, to smtp-sink",
    oursLabel: "`Mailer` (pool of 32)",
    peerLabel: "nodemailer pool (32, `raw`)",
    server: "smtp-sink",
    request: { mode: "pool", connections: 32, messages: scaled(40000, scale), size: 1024 },
    unit: "msg/s",
    targets: targets(2)
  },
  {
    id: "client-own",
    label: "1 KiB, one connection, to effect-smtp's server (PIPELINING, CHUNKING)",
    oursLabel: "`SmtpClient.connect` + `client.send`",
    peerLabel: "nodemailer `SMTPConnection.send`",
    server: "effect-smtp",
    request: { mode: "one", connections: 1, messages: scaled(20000, scale), size: 1024 },
    unit: "msg/s",
    targets: targets(2)
  },
  {
    id: "client-own-bdat",
    label: "1 KiB, one connection, to effect-smtp's server, `transfer: \"bdat\"`",
    oursLabel: "`client.send` with BDAT",
    peerLabel: "nodemailer `SMTPConnection.send`",
    server: "effect-smtp",
    request: { mode: "one", connections: 1, messages: scaled(20000, scale), size: 1024, transfer: "bdat" },
    unit: "msg/s"
  },
  {
    id: "client-100m",
    label: "one 100 MiB message, to smtp-sink",
    oursLabel: "`SmtpClient.connect` + `client.send`",
    peerLabel: "nodemailer `SMTPConnection.send`",
    server: "smtp-sink",
    request: { mode: "one", connections: 1, messages: 1, size: 100 * MiB },
    unit: "MB/s",
    targets: targets(1) // keeps its lead
  }
]

const log = (s: string) => process.stderr.write(`${s}\n`)

interface ClientRun {
  readonly seconds: number
  readonly cpuSeconds: number
  readonly serverCpuShare: number
  readonly peakRss: number
  readonly messages: number
  readonly bytes: number
}

const sendOnce = async (client: NodeChild, server: Server, serverPid: number, request: SendRequest): Promise<ClientRun> => {
  const before = await server.received()
  resetPeakRss(client.pid)
  const serverCpu0 = cpuOf(serverPid)
  const answer = await client.request({ type: "send", ...request }, 600_000) as unknown as SendAnswer
  const peakRss = peakRssBytes(client.pid)
  const serverCpu = cpuOf(serverPid) - serverCpu0
  const after = await server.received()
  if (answer.accepted !== request.messages) throw new Error(`${answer.accepted} of ${request.messages} messages accepted`)
  if (Number.isFinite(before.messages) && after.messages - before.messages !== request.messages) {
    throw new Error(`the server received ${after.messages - before.messages} of ${request.messages} messages`)
  }
  if (after.bytes - before.bytes < request.messages * request.size) {
    throw new Error(`the server read ${after.bytes - before.bytes} bytes, expected at least ${request.messages * request.size}`)
  }
  return {
    // Both as the child measured them around the sending alone (building the message excluded).
    seconds: answer.seconds,
    cpuSeconds: answer.cpuSeconds,
    serverCpuShare: serverCpu / answer.seconds,
    peakRss,
    messages: request.messages,
    bytes: request.messages * request.size
  }
}

export const clientSuite = async (programs: {
  readonly ours: Program
  readonly peer: Program
  readonly server: Program
}, options: { readonly reps: number; readonly scale: number; readonly ids: (id: string) => boolean }): Promise<{
  readonly rows: Array<Row>
  readonly raw: ReadonlyArray<unknown>
}> => {
  const rows: Array<Row> = []
  const raw: Array<unknown> = []
  const cases = clientCases(options.scale).filter((c) => options.ids(c.id))
  for (const c of cases) {
    log(`client ${c.id}: ${c.label} (${c.request.messages} × ${c.request.size} bytes)…`)
    const server = c.server === "smtp-sink"
      ? await startSmtpSink(pinning.load)
      : await nodeServer(programs.server).start({ mode: "sink", core: pinning.load })
    const clients: Array<NodeChild> = []
    try {
      for (const program of [programs.ours, programs.peer]) {
        clients.push((await startProgram(program, { core: pinning.measured })).child)
      }
      const request = (messages: number, size = c.request.size): SendRequest => ({ ...c.request, port: server.port, messages, size })
      // Warm-up: the same kind of sending, smaller.
      for (const client of clients) {
        await sendOnce(client, server, server.pid, request(c.request.size > MiB ? 1 : 1000, Math.min(c.request.size, 8 * MiB)))
      }
      const runs: Array<Array<ClientRun>> = clients.map(() => [])
      for (let i = 0; i < options.reps; i++) {
        for (let j = 0; j < clients.length; j++) runs[j]!.push(await sendOnce(clients[j]!, server, server.pid, request(c.request.messages)))
      }
      raw.push({ case: c.id, runs })
      const [ours, peer] = runs.map((rs) => ({
        rate: median(rs.map((r) => c.unit === "msg/s" ? r.messages / r.seconds : r.bytes / 1e6 / r.seconds)),
        cpu: median(rs.map((r) => r.cpuSeconds / r.messages)),
        cpuShare: median(rs.map((r) => r.cpuSeconds / r.seconds)),
        serverShare: median(rs.map((r) => r.serverCpuShare)),
        peakRss: median(rs.map((r) => r.peakRss))
      }))
      const base = {
        suite: "client",
        id: c.id,
        case: `${c.label}: ${c.oursLabel}`,
        peerName: c.peerLabel
      } as const
      rows.push(
        {
          ...base,
          metric: "throughput",
          unit: c.unit,
          ours: ours!.rate,
          peer: peer!.rate,
          target: c.targets?.throughput,
          note: `${c.server} busy ${Math.round(ours!.serverShare * 100)} / ${Math.round(peer!.serverShare * 100)} %${c.targets === undefined ? "; extra row" : ""}`
        },
        {
          ...base,
          metric: "client CPU per msg",
          unit: "cpu",
          ours: ours!.cpu,
          peer: peer!.cpu,
          target: c.targets?.cpu,
          note: `client busy ${Math.round(ours!.cpuShare * 100)} / ${Math.round(peer!.cpuShare * 100)} %`
        },
        { ...base, metric: "client peak RSS", unit: "bytes", ours: ours!.peakRss, peer: peer!.peakRss, target: c.targets?.peakRss }
      )
    } finally {
      for (const client of clients) await client.stop()
      await server.stop()
    }
  }
  return { rows, raw }
}
