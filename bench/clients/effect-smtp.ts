/**
 * effect-smtp's client as a benchmark child. Each `send` request sends `messages` messages to
 * 127.0.0.1:`port` (plaintext): over one connection (`SmtpClient.connect` + `send`), through
 * the pooled `Mailer` with `connections` connections, or a connection per message (`sendMail`).
 */
import * as Effect from "effect/Effect"
import * as Mailer from "../../src/Mailer.ts"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import { serveRequests } from "../lib/child.ts"
import { FROM, makeMessage, type SendRequest, TO } from "../lib/message.ts"

const send = (r: SendRequest, body: Uint8Array) => {
  const where = { host: "127.0.0.1", port: r.port, security: "none", localName: "bench.invalid" } as const
  const message = { from: FROM, to: TO, body }
  const overOneConnection = (messages: number) =>
    Effect.scoped(Effect.gen(function*() {
      const client = yield* SmtpClient.connect(where)
      for (let i = 0; i < messages; i++) yield* client.send(message)
    }))
  // The pool: as many senders as connections, each waiting for its message before the next
  // (as the nodemailer child does); no retries, connections never replaced.
  const pooled = Effect.gen(function*() {
    const perSender = Math.ceil(r.messages / r.connections)
    const shares = Array.from({ length: r.connections }, (_, i) => Math.max(0, Math.min(perSender, r.messages - i * perSender)))
    const sender = (n: number) =>
      Effect.gen(function*() {
        for (let i = 0; i < n; i++) yield* Mailer.send(message)
      })
    yield* Effect.forEach(shares, sender, { concurrency: "unbounded", discard: true })
  }).pipe(Effect.provide(Mailer.layer({
    ...where,
    pool: { size: r.connections, maxMessagesPerConnection: Number.POSITIVE_INFINITY },
    retry: false
  })))
  const program = r.mode === "one"
    ? overOneConnection(r.messages)
    : r.mode === "pool"
    ? pooled
    : Effect.gen(function*() {
      for (let i = 0; i < r.messages; i++) yield* SmtpClient.sendMail({ ...where, ...message })
    })
  return program.pipe(Effect.provide(NodeTransport.layer))
}

serveRequests({}, {
  send: async (request) => {
    const r = request as unknown as SendRequest
    const body = makeMessage(r.size) // built before the clock starts
    const cpu = process.cpuUsage()
    const started = performance.now()
    const startedUs = Number(process.hrtime.bigint() / 1000n) // where a CPU profile of the sending starts
    await Effect.runPromise(send(r, body))
    const seconds = (performance.now() - started) / 1000
    const used = process.cpuUsage(cpu)
    return { seconds, cpuSeconds: (used.user + used.system) / 1e6, startedUs }
  }
})
