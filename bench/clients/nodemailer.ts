/**
 * nodemailer's SMTP transport as a benchmark child, sending the same pre-built message
 * (`raw`, so no MIME composition is measured) as effect-smtp's client: over one pooled
 * connection, over a pool of `connections`, or unpooled (nodemailer's default: a connection
 * per message).
 */
import nodemailer from "nodemailer"
import { serveRequests } from "../lib/child.ts"
import { FROM, makeMessage, type SendRequest, TO } from "../lib/message.ts"

const send = async (r: SendRequest, raw: Buffer) => {
  const base = { host: "127.0.0.1", port: r.port, secure: false, ignoreTLS: true, name: "bench.invalid" }
  const transport = r.mode === "per-message"
    ? nodemailer.createTransport(base)
    : nodemailer.createTransport({
      ...base,
      pool: true,
      maxConnections: r.mode === "one" ? 1 : r.connections,
      maxMessages: Infinity
    })
  const sendOne = async () => {
    const info = await transport.sendMail({ envelope: { from: FROM, to: [TO] }, raw })
    if (info.accepted.length !== 1) throw new Error(`not accepted: ${JSON.stringify(info)}`)
  }
  // As many senders as connections, each waiting for its message before the next.
  const senders = r.mode === "pool" ? r.connections : 1
  const perSender = Math.ceil(r.messages / senders)
  try {
    await Promise.all(Array.from({ length: senders }, async (_, i) => {
      const n = Math.min(perSender, r.messages - i * perSender)
      for (let k = 0; k < n; k++) await sendOne()
    }))
  } finally {
    transport.close()
  }
}

serveRequests({}, {
  send: async (request) => {
    const r = request as unknown as SendRequest
    const message = makeMessage(r.size) // built before the clock starts
    const raw = Buffer.from(message.buffer, message.byteOffset, message.byteLength)
    const cpu = process.cpuUsage()
    const started = performance.now()
    const startedUs = Number(process.hrtime.bigint() / 1000n) // where a CPU profile of the sending starts
    await send(r, raw)
    const seconds = (performance.now() - started) / 1000
    const used = process.cpuUsage(cpu)
    return { seconds, cpuSeconds: (used.user + used.system) / 1e6, startedUs }
  }
})
