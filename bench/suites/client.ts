/**
 * Client benchmarks: effect-smtp's client and nodemailer's SMTP transport, each in its own
 * process pinned to the measured core, send the same message to Postfix's smtp-sink on the
 * other core. Each client is warmed up, then the clients take turns for `reps` runs.
 */
import type { SendRequest } from "../lib/message.ts"
import { cpuSeconds, NodeChild, peakRssBytes, pinning, resetPeakRss } from "../lib/proc.ts"
import { median, type Row } from "../lib/report.ts"
import { startSmtpSink } from "./server.ts"

const MiB = 1024 * 1024

interface ClientRun {
  readonly seconds: number
  readonly cpuSeconds: number
  readonly sinkCpuSeconds: number
  readonly peakRss: number
  readonly messages: number
  readonly bytes: number
}

export interface ClientCase {
  readonly id: string
  readonly label: string
  readonly peerLabel: string
  readonly mode: SendRequest["mode"]
  readonly connections: number
  readonly messages: number
  readonly size: number
  readonly unit: "msg/s" | "MB/s"
}

export const clientCases = (scale: number): ReadonlyArray<ClientCase> => [
  {
    id: "one",
    label: "1 KiB msgs, one connection",
    peerLabel: "nodemailer (pool of 1)",
    mode: "one",
    connections: 1,
    messages: Math.round(5000 * scale),
    size: 1024,
    unit: "msg/s"
  },
  {
    id: "pool",
    label: "1 KiB msgs, 8 connections",
    peerLabel: "nodemailer (pool of 8)",
    mode: "pool",
    connections: 8,
    messages: Math.round(20000 * scale),
    size: 1024,
    unit: "msg/s"
  },
  {
    id: "per-message",
    label: "1 KiB msgs, a connection each",
    peerLabel: "nodemailer (unpooled)",
    mode: "per-message",
    connections: 1,
    messages: Math.round(2000 * scale),
    size: 1024,
    unit: "msg/s"
  },
  {
    id: "100m",
    label: "one 100 MiB msg",
    peerLabel: "nodemailer (unpooled)",
    mode: "per-message",
    connections: 1,
    messages: 1,
    size: 100 * MiB,
    unit: "MB/s"
  }
]

const log = (s: string) => process.stderr.write(`${s}\n`)

const sendOnce = async (client: NodeChild, sinkPid: number, request: SendRequest): Promise<ClientRun> => {
  resetPeakRss(client.pid)
  const sink0 = cpuSeconds(sinkPid)
  const answer = await client.request({ type: "send", ...request }, 180_000)
  return {
    // Both as the child measured them around the sending alone (building the message excluded).
    seconds: Number(answer.seconds),
    cpuSeconds: Number(answer.cpuSeconds),
    sinkCpuSeconds: cpuSeconds(sinkPid) - sink0,
    peakRss: peakRssBytes(client.pid),
    messages: request.messages,
    bytes: request.messages * request.size
  }
}

/** Suite 2: messages per second (or MB/s), client CPU per message and client memory. */
export const clientSuite = async (
  bundles: { readonly ours: string; readonly peer: string },
  reps: number,
  scale: number
): Promise<{ readonly rows: Array<Row>; readonly raw: ReadonlyArray<unknown> }> => {
  const rows: Array<Row> = []
  const raw: Array<unknown> = []
  const sink = await startSmtpSink(pinning.load)
  try {
    for (const c of clientCases(scale)) {
      log(`client: ${c.label} (${c.messages} × ${c.size} bytes)…`)
      const clients: Array<NodeChild> = []
      try {
        for (const script of [bundles.ours, bundles.peer]) {
          clients.push((await NodeChild.start({ script, core: pinning.measured })).child)
        }
        const request = (messages: number): SendRequest => ({
          port: sink.port,
          mode: c.mode,
          connections: c.connections,
          messages,
          size: c.size
        })
        // Warm-up: the same kind of sending, smaller.
        for (const client of clients) {
          await sendOnce(client, sink.pid, { ...request(c.size > MiB ? 1 : 500), size: Math.min(c.size, 8 * MiB) })
        }
        const runs: Array<Array<ClientRun>> = clients.map(() => [])
        for (let i = 0; i < reps; i++) {
          for (let j = 0; j < clients.length; j++) runs[j]!.push(await sendOnce(clients[j]!, sink.pid, request(c.messages)))
        }
        raw.push({ case: c.id, runs })
        const summary = runs.map((rs) => ({
          rate: median(rs.map((r) => c.unit === "msg/s" ? r.messages / r.seconds : r.bytes / 1e6 / r.seconds)),
          cpu: median(rs.map((r) => r.cpuSeconds / r.messages)),
          cpuShare: median(rs.map((r) => r.cpuSeconds / r.seconds)),
          sinkShare: median(rs.map((r) => r.sinkCpuSeconds / r.seconds)),
          peakRss: median(rs.map((r) => r.peakRss))
        }))
        const [ours, peer] = summary as [typeof summary[0], typeof summary[0]]
        const base = { suite: "client", case: c.label, peerName: c.peerLabel } as const
        rows.push(
          {
            ...base,
            metric: "throughput",
            unit: c.unit,
            ours: ours.rate,
            peer: peer.rate,
            note: `smtp-sink busy ${Math.round(ours.sinkShare * 100)} / ${Math.round(peer.sinkShare * 100)} %`
          },
          {
            ...base,
            metric: "client CPU per msg",
            unit: "cpu",
            ours: ours.cpu,
            peer: peer.cpu,
            note: `client busy ${Math.round(ours.cpuShare * 100)} / ${Math.round(peer.cpuShare * 100)} %`
          },
          { ...base, metric: "client peak RSS", unit: "bytes", ours: ours.peakRss, peer: peer.peakRss }
        )
      } finally {
        for (const client of clients) await client.stop()
      }
    }
  } finally {
    await sink.stop()
  }
  return { rows, raw }
}
