/**
 * effect-smtp's client as a benchmark child, the package as it ships (`effect-smtp/*` resolves
 * to dist/). Each `send` request sends `messages` messages to 127.0.0.1:`port` (plaintext):
 * over one connection (`SmtpClient.connect` + `client.send`), or through the pooled `Mailer`
 * with `connections` connections and as many messages in flight.
 */
import * as Effect from "effect/Effect"
import * as Mailer from "effect-smtp/Mailer"
import * as NodeTransport from "effect-smtp/NodeTransport"
import * as SmtpClient from "effect-smtp/SmtpClient"
import { resolvedFiles, serveRequests } from "../lib/child.ts"
import { FROM, makeMessage, type SendAnswer, type SendRequest, TO } from "../lib/message.ts"

const send = (r: SendRequest, body: Uint8Array, count: () => void) => {
  const where = { host: "127.0.0.1", port: r.port, security: "none", localName: "bench.invalid" } as const
  const message = { from: FROM, to: TO, body, transfer: r.transfer ?? "auto" }
  const checked = (result: SmtpClient.SendResult) => {
    if (result.accepted.length !== 1) return Effect.die(new Error(`not accepted: ${JSON.stringify(result)}`))
    count()
    return Effect.void
  }
  const overOneConnection = Effect.scoped(Effect.gen(function*() {
    const client = yield* SmtpClient.connect(where)
    for (let i = 0; i < r.messages; i++) yield* Effect.flatMap(client.send(message), checked)
  }))
  // As many senders as connections, each waiting for its message before the next (as the
  // nodemailer child does); no retries, connections never replaced.
  const pooled = Effect.gen(function*() {
    const perSender = Math.ceil(r.messages / r.connections)
    const shares = Array.from({ length: r.connections }, (_, i) => Math.max(0, Math.min(perSender, r.messages - i * perSender)))
    const sender = (n: number) =>
      Effect.gen(function*() {
        for (let i = 0; i < n; i++) yield* Effect.flatMap(Mailer.send(message), checked)
      })
    yield* Effect.forEach(shares, sender, { concurrency: "unbounded", discard: true })
  }).pipe(Effect.provide(Mailer.layer({
    ...where,
    pool: { size: r.connections, maxMessagesPerConnection: Number.POSITIVE_INFINITY },
    retry: false
  })))
  return (r.mode === "one" ? overOneConnection : pooled).pipe(Effect.provide(NodeTransport.layer))
}

serveRequests({ resolved: resolvedFiles(["effect-smtp/SmtpClient", "effect-smtp/Mailer", "effect"]) }, {
  send: async (request): Promise<SendAnswer> => {
    const r = request as unknown as SendRequest
    const body = makeMessage(r.size) // built before the clock starts
    let accepted = 0
    const cpu = process.cpuUsage()
    const started = performance.now()
    const startedUs = Number(process.hrtime.bigint() / 1000n)
    await Effect.runPromise(send(r, body, () => accepted++))
    const seconds = (performance.now() - started) / 1000
    const used = process.cpuUsage(cpu)
    return { seconds, cpuSeconds: (used.user + used.system) / 1e6, accepted, startedUs }
  }
})
