/**
 * An LMTP delivery agent: an MTA (Postfix, for instance, with `mailbox_transport =
 * lmtp:unix:/tmp/effect-smtp-lmtp.sock`) hands each message over a Unix socket, and the agent
 * answers once per recipient: delivered, or refused for that recipient alone.
 *
 * Run in this repository: node_modules/.bin/node --conditions=source examples/lmtp-delivery.ts.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type { Address } from "effect-smtp/Address"
import { Backend } from "effect-smtp/Backend"
import * as NodeTransport from "effect-smtp/NodeTransport"
import { SmtpError } from "effect-smtp/SmtpError"
import * as SmtpServer from "effect-smtp/SmtpServer"

const root = "/tmp/effect-smtp-mailboxes"
const quotaBytes = 10 * 1024 * 1024

const mailboxOf = (rcpt: Address) => path.join(root, rcpt.toLowerCase())

const Mailboxes = Layer.succeed(Backend, Backend.of({
  newSession: () =>
    Effect.succeed({
      mail: () => Effect.void,
      rcpt: (to) => to.endsWith("@example.com") ? Effect.void : Effect.fail(SmtpError.of(550, [5, 1, 1], "No such user")),
      data: () => Effect.void, // unused: lmtpData answers instead
      // Read the body once, then deliver to each recipient and report each outcome.
      lmtpData: (body, recipients) =>
        Effect.gen(function*() {
          const chunks = yield* Stream.runCollect(body)
          const message = Buffer.concat(chunks)
          return yield* Effect.forEach(recipients, (rcpt) =>
            message.length > quotaBytes
              ? Effect.succeed(SmtpError.of(552, [5, 2, 2], "Mailbox full"))
              : Effect.tryPromise(async () => {
                await fs.mkdir(mailboxOf(rcpt), { recursive: true })
                await fs.writeFile(path.join(mailboxOf(rcpt), `${Date.now()}-${process.pid}.eml`), message)
              }).pipe(
                Effect.as(undefined),
                Effect.catch(() => Effect.succeed(SmtpError.of(451, [4, 3, 0], "Could not write the mailbox")))
              ))
        }),
      reset: Effect.void
    })
}))

const Agent = SmtpServer.layer({
  listen: [{ endpoint: { _tag: "Unix", path: "/tmp/effect-smtp-lmtp.sock" } }],
  protocol: "lmtp",
  domain: "mda.example.com"
}).pipe(Layer.provide(Mailboxes), Layer.provide(NodeTransport.layer))

NodeRuntime.runMain(Layer.launch(Agent))
