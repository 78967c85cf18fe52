/**
 * AUTH (RFC 4954) on a client session: the mechanism is chosen from what the server offers
 * and what the input can drive, then the SASL exchange runs challenge by challenge.
 *
 * The SASL module (its mechanisms, SASLprep's tables and the crypto they use) is loaded at the
 * first AUTH: a client that never authenticates (a relay, a local submission) does not keep
 * several MiB of it in memory. A caller that built its own mechanisms has it loaded already.
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Sasl from "../../Sasl.ts"
import type * as SaslModule from "../../Sasl.ts"
import * as Config from "./Config.ts"
import type { AuthInput } from "./Config.ts"
import * as Envelope from "./Envelope.ts"
import { type ClientError, invalidArgument, SmtpClientError, SmtpProtocolError, unsupported } from "./Errors.ts"
import { expect, type Session } from "./Session.ts"

const isCredentials = (input: AuthInput): input is Sasl.Credentials => !Array.isArray(input) && "_tag" in input

const authFailure = (e: Sasl.SaslError): ClientError =>
  e.reason === "InvalidCredentials"
    ? invalidArgument(`cannot authenticate with ${e.mechanism ?? "SASL"}: ${e.message}`)
    : new SmtpProtocolError({ reason: "AuthExchange", message: e.message, cause: e })

/** RFC 4954 4: an AUTH line stays within SMTP's 512 octets, else the response waits for a 334. */
const MAX_AUTH_LINE = 512

let saslModule: Promise<typeof SaslModule> | undefined
const loadSasl: Effect.Effect<typeof SaslModule> = Effect.promise(() => (saslModule ??= import("../../Sasl.ts")))

const exchange = (s: Session, Sasl: typeof SaslModule, mechanism: Sasl.ClientMechanism): Effect.Effect<void, ClientError> =>
  Effect.gen(function*() {
    const t = s.t
    const sasl = yield* Effect.mapError(mechanism.client, authFailure)
    const initial = yield* Effect.mapError(sasl.start, authFailure)
    let withheld: Uint8Array | undefined
    let line = `AUTH ${mechanism.name}`
    if (initial !== undefined) {
      const encoded = initial.length === 0 ? "=" : Sasl.encodeBase64(initial)
      if (line.length + 1 + encoded.length + 2 <= MAX_AUTH_LINE) line += ` ${encoded}`
      else withheld = initial
    }
    // On a failure of our side mid-exchange, "*" cancels it and the server answers 501.
    const cancel = (error: ClientError) =>
      Effect.suspend(() => s.command("*", t.command, "AUTH cancellation")).pipe(Effect.andThen(Effect.fail(error)))
    const shown = withheld === undefined && initial !== undefined ? `AUTH ${mechanism.name} <redacted>` : line
    let r = yield* s.command(line, t.command, "AUTH", shown)
    while (r.code === 334) {
      let response: Uint8Array
      if (withheld !== undefined) {
        response = withheld
        withheld = undefined
      } else {
        const challenge = Sasl.decodeBase64(r.lines[0].trim())
        if (Result.isFailure(challenge)) {
          return yield* cancel(new SmtpProtocolError({ reason: "AuthExchange", message: "AUTH challenge is not base64", reply: r }))
        }
        const next = yield* Effect.result(sasl.next(challenge.success))
        if (Result.isFailure(next)) return yield* cancel(authFailure(next.failure))
        response = next.success
      }
      r = yield* s.command(Sasl.encodeBase64(response), t.command, "AUTH response", "<redacted>")
    }
    yield* expect(r, (code) => code === 235, "AUTH")
    // SCRAM: a server that did not prove it knows the password is not trusted.
    yield* Effect.mapError(sasl.finish(), authFailure)
    s.authenticatedWith = mechanism.name
  })

/**
 * AUTH with the strongest mechanism the server offers that the input can drive. PLAIN, LOGIN
 * and bearer tokens are not used without TLS unless `allowInsecure`.
 */
export const auth = (s: Session, input: AuthInput, allowInsecure: boolean): Effect.Effect<void, ClientError> => {
  const checked = Config.checkAuth(input)
  return Result.isFailure(checked) ? Effect.fail(checked.failure) : authWith(s, input, allowInsecure)
}

const authWith = (s: Session, input: AuthInput, allowInsecure: boolean): Effect.Effect<void, ClientError> =>
  Effect.flatMap(loadSasl, (Sasl) => {
    const offered = Envelope.authMechanisms(s.extensions)
    if (offered.length === 0) return Effect.fail(unsupported("the server does not offer AUTH"))
    const candidates: ReadonlyArray<Sasl.ClientMechanism> = isCredentials(input)
      ? Sasl.clientMechanisms(input)
      : Array.isArray(input)
      ? input
      : [input as Sasl.ClientMechanism]
    const secure = s.transport.tls() !== undefined
    const chosen = Sasl.choose(offered, candidates, { secure, allowInsecure })
    if (chosen !== undefined) return exchange(s, Sasl, chosen)
    if (Sasl.choose(offered, candidates, { secure: true }) !== undefined) {
      return Effect.fail(new SmtpClientError({
        reason: "InsecureAuth",
        message: "the mechanisms the server offers would send the secret without TLS (allowInsecureAuth permits it)"
      }))
    }
    return Effect.fail(unsupported(`no mechanism fits both the credentials and the server (${offered.join(" ")})`))
  })
