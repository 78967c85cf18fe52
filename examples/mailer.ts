/**
 * The pooled `Mailer` service for an application that sends a lot: connections are reused,
 * temporary failures retried on a schedule, and a rate limit holds across the whole pool.
 *
 * Run in this repository against the dev server (`npm start`):
 *   node_modules/.bin/node --conditions=source examples/mailer.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Mailer from "effect-smtp/Mailer"
import * as NodeTransport from "effect-smtp/NodeTransport"

const MailerLive = Mailer.layer({
  host: "127.0.0.1",
  port: 2525,
  security: "opportunistic",
  pool: { size: 4, maxMessagesPerConnection: 100, idleTimeout: "30 seconds" },
  retry: { schedule: Schedule.max([Schedule.exponential("500 millis"), Schedule.recurs(4)]) },
  rateLimit: { messages: 50, interval: "1 second" }
}).pipe(Layer.provide(NodeTransport.layer))

const notify = (user: number) =>
  Mailer.send({
    from: "noreply@example.com",
    to: `user${user}@example.com`,
    body: `Subject: Weekly digest\r\n\r\nHello user ${user}.\r\n`
  })

const program = Effect.forEach(Array.from({ length: 200 }, (_, i) => i), notify, { concurrency: 8 }).pipe(
  Effect.andThen((results) => Console.log(`sent ${results.length} messages`))
)

NodeRuntime.runMain(program.pipe(Effect.provide(MailerLive)))
