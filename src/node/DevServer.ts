/**
 * The dev mail server behind `effect-smtp serve`: a Backend that stores every accepted message
 * in a Maildir, injects configured failures, and reports events as JSON lines.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import type { Address } from "../Address.ts"
import { Backend, type ConnectionInfo, type MessageBody, type Session } from "../Backend.ts"
import * as EnhancedCode from "../EnhancedCode.ts"
import type { MailOptions } from "../MailOptions.ts"
import * as Sasl from "../Sasl.ts"
import { SmtpError } from "../SmtpError.ts"
import * as SmtpServer from "../SmtpServer.ts"
import * as Maildir from "./Maildir.ts"
import * as NodeTransport from "../NodeTransport.ts"
import { formatEndpoint, type Network } from "../Transport.ts"

/** A failure to inject: at `stage`, an address matching `pattern` gets `error`. */
export interface Fault {
  readonly stage: "mail" | "rcpt" | "data"
  readonly pattern: RegExp
  readonly error: SmtpError
}

const faultSyntax = /^(mail|rcpt|data):(.*)=([45]\d\d)(?: ([245]\.\d{1,3}\.\d{1,3}))?(?: (.*))?$/s

/** Parses `STAGE:REGEX=CODE [ENHANCED] [TEXT]`, e.g. `rcpt:^nobody@=550 5.1.1 No such user`. */
export const parseFault = (rule: string): Result.Result<Fault, string> => {
  const m = faultSyntax.exec(rule)
  if (m === null) return Result.fail(`invalid fault "${rule}": expected STAGE:REGEX=CODE [X.Y.Z] [TEXT], STAGE one of mail, rcpt, data`)
  let pattern: RegExp
  try {
    pattern = new RegExp(m[2]!)
  } catch (e) {
    return Result.fail(`invalid fault "${rule}": bad regular expression: ${(e as Error).message}`)
  }
  const code = Number(m[3])
  const enhanced = m[4] === undefined ? "unset" : EnhancedCode.parse(m[4]) ?? "unset"
  const text = m[5] ?? (code >= 500 ? "Rejected by fault injection" : "Temporarily rejected by fault injection")
  return Result.succeed({ stage: m[1] as Fault["stage"], pattern, error: SmtpError.of(code, enhanced, text) })
}

/** One event on stdout. */
export type Event =
  | {
    readonly event: "listening"
    readonly address: string
    readonly protocol: "smtp" | "lmtp" | "http"
    readonly tls: "none" | "starttls" | "implicit"
  }
  | {
    readonly event: "received"
    readonly id: string
    readonly from: string
    readonly to: ReadonlyArray<string>
    readonly bytes: number
    readonly path: string
    readonly helo: string | null
    /** The client's address (`host:port`; behind a PROXY protocol proxy, the client's); null on a Unix socket. */
    readonly remote: string | null
    readonly tls: boolean
    readonly auth: string | null
    readonly body: "7BIT" | "8BITMIME" | "BINARYMIME"
    readonly smtputf8: boolean
  }
  | {
    /** `serve --workers N`: a worker process is ready, or exited (and starts again in `restartInMs`). */
    readonly event: "worker"
    readonly worker: number
    readonly pid: number
    readonly status: "ready" | "exited"
    readonly code?: number | null | undefined
    readonly signal?: string | null | undefined
    readonly restartInMs?: number | undefined
  }

export interface DevServerOptions {
  readonly server: SmtpServer.ServerOptions
  readonly maildir: string
  readonly users: ReadonlyMap<string, string>
  readonly faults: ReadonlyArray<Fault>
  readonly emit: (event: Event) => Effect.Effect<void>
  /**
   * A check every session passes before it opens, in the connection's scope: a worker of
   * `serve --workers` asks its supervisor here whether the client is within the per-IP limit
   * of the whole server. Failing refuses the session with that reply.
   */
  readonly admit?: ((connection: ConnectionInfo) => Effect.Effect<void, SmtpError, Scope.Scope>) | undefined
}

const matching = (faults: ReadonlyArray<Fault>, stage: Fault["stage"], address: string) =>
  faults.find((f) => f.stage === stage && f.pattern.test(address))?.error

/** The Backend: Maildir storage, faults, events. */
const backend = (o: DevServerOptions): Layer.Layer<Backend, Maildir.MaildirError | Sasl.SaslError> =>
  Layer.effect(
    Backend,
    Effect.gen(function*() {
      yield* Maildir.ensure(o.maildir)
      const auth = o.users.size === 0 ? undefined : yield* authMechanisms(o.users, o.server.domain ?? "localhost")

      const session = (conn: ConnectionInfo) =>
        Effect.sync((): Session => {
          let from: Address | null = null
          let options: MailOptions = {}
          let rcpts: Array<Address> = []

          const store = (body: MessageBody, to: ReadonlyArray<Address>) =>
            Effect.gen(function*() {
              const d = yield* Maildir.deliver(o.maildir, body)
              yield* o.emit({
                event: "received",
                id: d.id,
                from: from ?? "",
                to,
                bytes: d.bytes,
                path: d.path,
                helo: conn.helo() ?? null,
                remote: conn.remoteEndpoint === undefined ? null : formatEndpoint(conn.remoteEndpoint),
                tls: conn.tls() !== undefined,
                auth: conn.authenticatedAs() ?? null,
                body: options.body ?? "7BIT",
                smtputf8: options.smtputf8 === true
              })
            })

          return {
            mail: (f, opts) => {
              const fault = matching(o.faults, "mail", f ?? "")
              if (fault) return Effect.fail(fault)
              from = f
              options = opts
              return Effect.void
            },
            rcpt: (to) => {
              const fault = matching(o.faults, "rcpt", to)
              if (fault) return Effect.fail(fault)
              rcpts.push(to)
              return Effect.void
            },
            data: (body) => {
              const fault = rcpts.map((r) => matching(o.faults, "data", r)).find((f) => f !== undefined)
              return fault ? Effect.fail(fault) : store(body, rcpts)
            },
            lmtpData: (body, recipients) => {
              const statuses = recipients.map((r) => matching(o.faults, "data", r))
              const delivered = recipients.filter((_, i) => statuses[i] === undefined)
              if (delivered.length === 0) return Effect.succeed(statuses)
              return Effect.as(store(body, delivered), statuses)
            },
            reset: Effect.sync(() => {
              from = null
              options = {}
              rcpts = []
            }),
            ...(auth === undefined ? {} : { auth })
          }
        })

      const admit = o.admit
      return Backend.of({
        newSession: admit === undefined ? session : (conn) => Effect.andThen(admit(conn), session(conn))
      })
    })
  )

/** PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-256 for the configured users. */
const authMechanisms = (users: ReadonlyMap<string, string>, hostname: string) =>
  Effect.gen(function*() {
    const secrets = new Map([...users].map(([u, p]) => [u, Redacted.make(p)] as const))
    const scram = new Map<string, Sasl.ScramCredential>()
    for (const [user, password] of users) scram.set(user, yield* Sasl.deriveScramCredential(password))
    const lookup = (user: string) => Effect.succeed(secrets.get(user))
    return Sasl.serverMechanisms({
      password: Sasl.passwordVerifier(lookup),
      cramMd5: lookup,
      scramSha256: (user) => Effect.succeed(scram.get(user))
    }, { hostname })
  })

/** The whole dev server: the SMTP server layer over Node's network (or `network`) with the Maildir backend. */
export const layer = (o: DevServerOptions, network: Layer.Layer<Network> = NodeTransport.layer) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const server = yield* SmtpServer.SmtpServer
    for (const l of server.listeners) {
      yield* o.emit({ event: "listening", address: l.address, protocol: l.protocol, tls: l.tls })
    }
  })).pipe(
    Layer.provide(SmtpServer.layer(o.server)),
    Layer.provide(backend(o)),
    Layer.provide(network)
  )
