/**
 * Sending one message with `SmtpClient.sendMail`: connect, STARTTLS (required by default),
 * AUTH, the transaction, QUIT. Refused recipients are reported, not thrown.
 *
 * Run in this repository against the dev server (`npm start`):
 *   node_modules/.bin/node --conditions=source examples/send-mail.ts
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as NodeTransport from "effect-smtp/NodeTransport"
import * as SmtpClient from "effect-smtp/SmtpClient"

const program = SmtpClient.sendMail({
  host: "127.0.0.1",
  port: 2525,
  // The dev server on loopback has no certificate unless started with --tls-self-signed.
  security: "opportunistic",
  from: "app@example.com",
  to: ["alice@example.com", "bob@example.com"],
  body: [
    "From: app@example.com",
    "To: alice@example.com, bob@example.com",
    "Subject: Your receipt",
    "",
    "Thanks for your order.",
    ""
  ].join("\r\n")
}).pipe(
  Effect.tap((result) =>
    Console.log(`accepted: ${result.accepted.map((a) => a.recipient).join(", ")}; reply: ${result.reply.code}`)
  ),
  // Every recipient refused, or the server said no to the message: a typed error.
  Effect.catchTags({
    RecipientsRefused: (e) => Console.error(`nobody took it: ${e.message}`),
    SmtpError: (e) => Console.error(`refused: ${e.code} ${e.message}`)
  }),
  Effect.provide(NodeTransport.layer)
)

NodeRuntime.runMain(program)
