/**
 * `effect-smtp send`: sends one message and prints one JSON object saying what happened to
 * each recipient. Exit codes: 0 every recipient accepted, 1 some refused, 2 usage error,
 * 3 connection, TLS or protocol failure.
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Argument from "effect/cli/Argument"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as fs from "node:fs"
import * as Address from "../Address.ts"
import * as NodeTransport from "../NodeTransport.ts"
import type { Reply } from "../Reply.ts"
import * as Sasl from "../Sasl.ts"
import * as SmtpClient from "../SmtpClient.ts"
import { SmtpError } from "../SmtpError.ts"
import { parseListenAddress } from "../SmtpServer.ts"
import type { Endpoint } from "../Transport.ts"
import { UsageError, writeStdout } from "./output.ts"

/** A failure to reach or talk to the server: exit code 3. */
class SendFailed extends Error {
  readonly exitCode = 3
}

const sendFlags = {
  server: Flag.String("server").pipe(Flag.withDescription("HOST[:PORT] or unix:PATH of the server")),
  from: Flag.String("from").pipe(Flag.withDescription("Envelope sender; \"\" or \"<>\" for the null sender")),
  to: Flag.atLeast(Flag.String("to").pipe(Flag.withDescription("Envelope recipient (repeatable)")), 1),
  file: Argument.optional(Argument.String("file").pipe(Argument.withDescription("The message (default: stdin)"))),
  tls: Flag.Boolean("tls").pipe(Flag.withDescription("Implicit TLS from the first byte (port 465)"), Flag.withDefault(false)),
  starttls: Flag.optional(Flag.Literals("starttls", ["required", "opportunistic", "off"]).pipe(
    Flag.withDescription("Default required; opportunistic for unix: and loopback servers")
  )),
  ca: Flag.optional(Flag.String("ca").pipe(Flag.withDescription("PEM file of CA certificates to trust"))),
  insecure: Flag.Boolean("insecure").pipe(
    Flag.withDescription("Do not verify the server's certificate"),
    Flag.withDefault(false)
  ),
  auth: Flag.optional(Flag.String("auth").pipe(Flag.withDescription("USER:PASSWORD"))),
  mechanism: Flag.optional(Flag.String("mechanism").pipe(Flag.withDescription("SASL mechanism to use (default: the best offered)"))),
  lmtp: Flag.Boolean("lmtp").pipe(Flag.withDescription("Speak LMTP"), Flag.withDefault(false)),
  helo: Flag.optional(Flag.String("helo").pipe(Flag.withDescription("Name to send in EHLO (default localhost)"))),
  chunking: Flag.Literals("chunking", ["auto", "always", "never"]).pipe(
    Flag.withDescription("BDAT: auto (when BINARYMIME needs it), always, never"),
    Flag.withDefault("auto" as const)
  )
}

type SendInput = Command.Command.Config.Infer<typeof sendFlags>

const usage = (message: string) => new UsageError({ message })

const isLoopback = (e: Endpoint) =>
  e._tag === "Unix" || e.host === "localhost" || e.host === "::1" || /^127\./.test(e.host)

/** `host`, `host:port`, `[v6]:port` or `unix:/path`; without a port: 465 with --tls, 24 for LMTP, else 25. */
const parseServer = (text: string, input: SendInput): Endpoint => {
  if (text.startsWith("unix:") || /:\d+$/.test(text)) return parseListenAddress(text)
  const host = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text
  if (host === "" || /[\s/]/.test(host)) throw new Error(`invalid --server "${text}": use HOST[:PORT] or unix:PATH`)
  return { _tag: "Tcp", host, port: input.tls ? 465 : input.lmtp ? 24 : 25 }
}

const replyJson = (r: Reply) => ({
  code: r.code,
  enhanced: r.enhancedCode?.join(".") ?? null,
  message: r.lines.join("\n")
})
const errorJson = (rcpt: string, e: SmtpError) => ({
  rcpt,
  code: e.code,
  enhanced: e.resolvedEnhancedCode?.join(".") ?? null,
  message: e.message
})

const send = (input: SendInput) =>
  Effect.gen(function*() {
    const endpoint = yield* Effect.try({ try: () => parseServer(input.server, input), catch: (e) => usage((e as Error).message) })
    if (input.tls && Option.isSome(input.starttls) && input.starttls.value !== "off") {
      return yield* usage("--tls and --starttls do not go together")
    }
    const starttls = Option.getOrElse(input.starttls, () => isLoopback(endpoint) ? "opportunistic" as const : "required" as const)
    const security = input.tls ? "implicit" : starttls === "required" ? "starttls" : starttls === "opportunistic" ? "opportunistic" : "none"

    const ca = Option.isSome(input.ca) ? input.ca.value : undefined
    const caPem = ca === undefined ? undefined : yield* Effect.try({
      try: () => fs.readFileSync(ca, "utf8"),
      catch: (e) => usage(`cannot read --ca: ${(e as Error).message}`)
    })
    const file = Option.getOrUndefined(input.file)
    const body = yield* Effect.try({
      try: () => new Uint8Array(fs.readFileSync(file ?? 0)),
      catch: (e) => usage(`cannot read ${file ?? "stdin"}: ${(e as Error).message}`)
    })

    let auth: SmtpClient.AuthInput | undefined
    if (Option.isSome(input.auth)) {
      const i = input.auth.value.indexOf(":")
      if (i <= 0) return yield* usage("invalid --auth: expected USER:PASSWORD")
      const credentials: Sasl.Credentials = {
        _tag: "Password",
        username: input.auth.value.slice(0, i),
        password: Redacted.make(input.auth.value.slice(i + 1))
      }
      const mechanisms = Sasl.clientMechanisms(credentials)
      if (Option.isSome(input.mechanism)) {
        const name = input.mechanism.value.toUpperCase()
        const chosen = mechanisms.find((m) => m.name === name)
        if (chosen === undefined) {
          return yield* usage(`--mechanism ${name} cannot be used with a password (use ${mechanisms.map((m) => m.name).join(", ")})`)
        }
        auth = chosen
      } else {
        auth = credentials
      }
    } else if (Option.isSome(input.mechanism)) {
      return yield* usage("--mechanism needs --auth")
    }

    const from = input.from === "" || input.from === "<>" ? null : input.from
    // Check addresses before connecting: a typo is a usage error, not a server's refusal.
    for (const [flag, address] of [["--from", from], ...input.to.map((t) => ["--to", t] as const)] as const) {
      if (address === null) continue
      const parsed = Address.parse(address, { utf8: true })
      if (Result.isFailure(parsed)) return yield* usage(`invalid ${flag} "${address}": ${parsed.failure.message}`)
    }
    const result = yield* SmtpClient.sendMail({
      endpoint,
      security,
      tls: {
        ...(caPem === undefined ? {} : { ca: caPem }),
        ...(input.insecure ? { rejectUnauthorized: false } : {})
      },
      protocol: input.lmtp ? "lmtp" : "smtp",
      auth,
      allowInsecureAuth: isLoopback(endpoint),
      localName: Option.getOrUndefined(input.helo),
      from,
      to: input.to,
      body,
      transfer: input.chunking === "always" ? "bdat" : input.chunking === "never" ? "data" : "auto"
    }).pipe(
      Effect.map((r) => ({
        ok: r.rejected.length === 0,
        accepted: r.accepted.map((a) => a.recipient),
        rejected: r.rejected.map((x) => errorJson(x.recipient, x.error)),
        reply: replyJson(r.reply)
      })),
      // A refusal is an answer, not a failure: report it per recipient.
      Effect.catchTag("RecipientsRefused", (e) =>
        Effect.succeed({
          ok: false,
          accepted: [],
          rejected: e.rejected.map((x) => errorJson(x.recipient, x.error)),
          reply: null
        })),
      Effect.catchTag("SmtpError", (e) =>
        Effect.succeed({ ok: false, accepted: [], rejected: input.to.map((rcpt) => errorJson(rcpt, e)), reply: null })),
      Effect.catchTag("SmtpClientError", (e): Effect.Effect<never, UsageError | SendFailed> =>
        e.reason === "InvalidArgument" ? Effect.fail(usage(e.message)) : Effect.fail(new SendFailed(e.message))),
      Effect.catchTags({
        TransportError: (e) => Effect.fail(new SendFailed(e.message)),
        SmtpProtocolError: (e) => Effect.fail(new SendFailed(e.message))
      }),
      Effect.tapError((e) =>
        e instanceof SendFailed
          ? writeStdout(JSON.stringify({ ok: false, accepted: [], rejected: [], reply: null, error: e.message }) + "\n")
          : Effect.void
      ),
      Effect.provide(NodeTransport.layer)
    )
    yield* writeStdout(JSON.stringify(result) + "\n")
    if (!result.ok) process.exitCode = 1
  })

export const sendCommand = Command.make("send", sendFlags, send).pipe(
  Command.withDescription("Send one message (FILE or stdin) and print what each recipient said, as JSON"),
  Command.withExamples([
    {
      command: "effect-smtp send --server 127.0.0.1:2525 --from me@example.com --to you@example.com message.eml",
      description: "Send a file to the dev server"
    },
    {
      command: "effect-smtp send --server smtp.example.com:587 --auth me:secret --from me@example.com --to you@example.com < mail.eml",
      description: "Through a submission server, with STARTTLS required and AUTH"
    }
  ])
)


