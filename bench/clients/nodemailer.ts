/**
 * nodemailer as a benchmark child, from node_modules as its users run it, on the paths that do
 * what effect-smtp's do: over one connection its low-level `SMTPConnection`
 * (`nodemailer/lib/smtp-connection`: connect, then `send(envelope, message)` per message, as
 * `SmtpClient.connect` + `client.send`); for the pool its pooled transport with `connections`
 * connections and as many messages in flight, given the message as `raw` (no MIME composition).
 */
import nodemailer from "nodemailer"
import SMTPConnection from "nodemailer/lib/smtp-connection"
import { resolvedFiles, serveRequests } from "../lib/child.ts"
import { FROM, makeMessage, type SendAnswer, type SendRequest, TO } from "../lib/message.ts"

const options = (r: SendRequest) => ({ host: "127.0.0.1", port: r.port, secure: false, ignoreTLS: true, name: "bench.invalid" })

const overOneConnection = async (r: SendRequest, raw: Buffer, count: () => void) => {
  const connection = new SMTPConnection(options(r))
  const closed = new Promise<void>((resolve) => connection.once("end", () => resolve()))
  try {
    await new Promise<void>((resolve, reject) => {
      connection.once("error", reject)
      connection.connect((e) => (e ? reject(e) : resolve()))
    })
    for (let i = 0; i < r.messages; i++) {
      await new Promise<void>((resolve, reject) =>
        connection.send({ from: FROM, to: [TO] }, raw, (e, info) => {
          if (e) return reject(e)
          if (info?.accepted.length !== 1) return reject(new Error(`not accepted: ${JSON.stringify(info)}`))
          count()
          resolve()
        })
      )
    }
    connection.quit()
    await closed
  } finally {
    connection.close()
  }
}

const pooled = async (r: SendRequest, raw: Buffer, count: () => void) => {
  const transport = nodemailer.createTransport({ ...options(r), pool: true, maxConnections: r.connections, maxMessages: Infinity })
  // As many senders as connections, each waiting for its message before the next.
  const perSender = Math.ceil(r.messages / r.connections)
  try {
    await Promise.all(Array.from({ length: r.connections }, async (_, i) => {
      const n = Math.max(0, Math.min(perSender, r.messages - i * perSender))
      for (let k = 0; k < n; k++) {
        const info = await transport.sendMail({ envelope: { from: FROM, to: [TO] }, raw })
        if (info.accepted.length !== 1) throw new Error(`not accepted: ${JSON.stringify(info)}`)
        count()
      }
    }))
  } finally {
    transport.close()
  }
}

serveRequests({ resolved: resolvedFiles(["nodemailer", "nodemailer/lib/smtp-connection"]) }, {
  send: async (request): Promise<SendAnswer> => {
    const r = request as unknown as SendRequest
    const message = makeMessage(r.size) // built before the clock starts
    const raw = Buffer.from(message.buffer, message.byteOffset, message.byteLength)
    let accepted = 0
    const cpu = process.cpuUsage()
    const started = performance.now()
    const startedUs = Number(process.hrtime.bigint() / 1000n)
    await (r.mode === "one" ? overOneConnection : pooled)(r, raw, () => accepted++)
    const seconds = (performance.now() - started) / 1000
    const used = process.cpuUsage(cpu)
    return { seconds, cpuSeconds: (used.user + used.system) / 1e6, accepted, startedUs }
  }
})
