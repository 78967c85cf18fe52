/**
 * The bookkeeping every mechanism shares, so that a mechanism module holds only its
 * protocol: on the server, the length limit, sequencing, cancel and success data
 * (`wrapServer`, `clientFirst`); on the client, a list of answers given in order
 * (`scripted`).
 */
import * as Effect from "effect/Effect"
import type {
  Authorizer,
  ExchangeOptions,
  MechanismName,
  SaslClient,
  SaslServer,
  ServerContext,
  ServerMechanism,
  Step
} from "../../Sasl.ts"
import * as Bytes from "./bytes.ts"
import type { OAuthErrorDetails, SaslError } from "./error.ts"
import { cancelled, fail, tooLong } from "./error.ts"

/** Most bytes one client response may decode to. RFC 4954 limits an AUTH line to 12288 octets. */
export const DEFAULT_MAX_RESPONSE_LENGTH = 12 * 1024

export const EMPTY = new Uint8Array(0)

export const hasNul = (s: string): boolean => s.includes("\0")

export const utf8OrFail = (
  bytes: Uint8Array,
  mechanism: MechanismName,
  what: string
): Effect.Effect<string, SaslError> => {
  const s = Bytes.fromUtf8(bytes)
  return s === undefined ? fail("MalformedResponse", `${what} is not valid UTF-8`, mechanism) : Effect.succeed(s)
}

/** The default authorization: a client may only act as itself. */
export const authorizeSelf: Authorizer = ({ authzid, mechanism, username }) =>
  authzid === undefined || authzid === username
    ? Effect.succeed({ identity: username })
    : fail("AuthenticationFailed", "not authorized to act as the requested identity", mechanism)

// --- Server ------------------------------------------------------------------------------

export const challenge = (data: Uint8Array): Step => ({ _tag: "Challenge", data })

export const challengeText = (text: string): Step => ({ _tag: "Challenge", data: Bytes.utf8(text) })

export const success = (identity: string, username: string | undefined, data?: Uint8Array): Step =>
  data === undefined ? { _tag: "Success", identity, username } : { _tag: "Success", identity, username, data }

/** One mechanism's protocol, without the bookkeeping `wrapServer` does. */
export interface Exchange {
  readonly start: (initialResponse: Uint8Array | undefined) => Effect.Effect<Step, SaslError>
  readonly next: (response: Uint8Array) => Effect.Effect<Step, SaslError>
}

/**
 * The bookkeeping every server mechanism shares: length limit, sequencing (a response
 * before `start`, after success or after a failure is `Unexpected`), cancel, and success
 * data sent as a final challenge.
 */
const wrapServer = (mechanism: MechanismName, options: ExchangeOptions | undefined, exchange: Exchange): SaslServer => {
  const max = options?.maxResponseLength ?? DEFAULT_MAX_RESPONSE_LENGTH
  const dataAsChallenge = options?.successDataAsChallenge !== false
  let state: "new" | "running" | "final" | "done" = "new"
  let pending: { readonly identity: string; readonly username: string | undefined } | undefined

  const run = (data: Uint8Array | undefined, step: () => Effect.Effect<Step, SaslError>) => {
    if (data !== undefined && data.length > max) {
      state = "done"
      return Effect.fail(tooLong(mechanism))
    }
    return step().pipe(
      Effect.map((s): Step => {
        if (s._tag === "Challenge") return s
        if (s.data !== undefined && s.data.length > 0 && dataAsChallenge) {
          pending = { identity: s.identity, username: s.username }
          state = "final"
          return challenge(s.data)
        }
        state = "done"
        return s
      }),
      Effect.tapError(() => Effect.sync(() => (state = "done")))
    )
  }

  return {
    mechanism,
    start: (initialResponse) =>
      Effect.suspend(() => {
        if (state !== "new") {
          state = "done"
          return fail("Unexpected", "exchange already started", mechanism)
        }
        state = "running"
        return run(initialResponse, () => exchange.start(initialResponse))
      }),
    next: (response) =>
      Effect.suspend(() => {
        if (state === "final") {
          state = "done"
          // The answer to success data carried as a challenge must be empty (RFC 4422 3.6).
          return response.length === 0 && pending !== undefined
            ? Effect.succeed(success(pending.identity, pending.username))
            : fail("MalformedResponse", "expected an empty response", mechanism)
        }
        if (state !== "running") {
          const before = state
          state = "done"
          return fail("Unexpected", before === "new" ? "response before start" : "response after the exchange ended", mechanism)
        }
        return run(response, () => exchange.next(response))
      }),
    cancel: Effect.suspend(() => {
      state = "done"
      return Effect.fail(cancelled(mechanism))
    })
  }
}

/** A server mechanism whose exchanges are `exchange`, wrapped in the shared bookkeeping. */
export const mechanism = (
  name: MechanismName,
  plaintextSafe: boolean,
  exchange: (context: ServerContext) => Exchange,
  options: ExchangeOptions | undefined,
  available: (context: ServerContext) => boolean = () => true
): ServerMechanism => ({
  name,
  plaintextSafe,
  available,
  make: (context) => wrapServer(name, options, exchange(context))
})

/**
 * A mechanism where the client speaks first: no initial response gets an empty challenge,
 * then the client's one message is handled; anything after it is `Unexpected` unless
 * `after` handles it.
 */
export const clientFirst = (
  mechanism: MechanismName,
  handle: (message: Uint8Array) => Effect.Effect<Step, SaslError>,
  after?: (response: Uint8Array) => Effect.Effect<Step, SaslError>
): Exchange => {
  let received = false
  return {
    start: (ir) => {
      if (ir === undefined) return Effect.succeed(challenge(EMPTY))
      received = true
      return handle(ir)
    },
    next: (response) => {
      if (!received) {
        received = true
        return handle(response)
      }
      return after !== undefined ? after(response) : fail("Unexpected", "no further response expected", mechanism)
    }
  }
}

// --- Client ------------------------------------------------------------------------------

/** The caller's own credentials cannot be sent. */
export const invalid = (name: MechanismName, message: string): Effect.Effect<never, SaslError> =>
  fail("InvalidCredentials", message, name)

/** Client state shared by the simple mechanisms: a list of responses, given in order. */
export const scripted = (
  name: MechanismName,
  initial: Uint8Array | undefined,
  answer: (challenge: Uint8Array, step: number) => Effect.Effect<Uint8Array, SaslError>,
  steps: number,
  extra?: { readonly oauthError?: () => OAuthErrorDetails | undefined }
): SaslClient => {
  let step = 0
  let failed = false
  const guard = <A>(e: Effect.Effect<A, SaslError>) => Effect.tapError(e, () => Effect.sync(() => (failed = true)))
  const client: SaslClient = {
    mechanism: name,
    start: Effect.succeed(initial),
    next: (c) =>
      Effect.suspend(() => {
        if (failed || step >= steps) return guard(fail("MalformedChallenge", "unexpected challenge", name))
        return guard(answer(c, step++))
      }),
    finish: (data) =>
      Effect.suspend(() => {
        if (data !== undefined && data.length > 0) return fail("MalformedChallenge", "unexpected success data", name)
        if (failed) return fail("Unexpected", "success after a failed step", name)
        if (extra?.oauthError?.() !== undefined) return fail("Unexpected", "success after an error challenge", name)
        return Effect.void
      }),
    done: Effect.sync(() => !failed && extra?.oauthError?.() === undefined)
  }
  const oauthError = extra?.oauthError
  return oauthError === undefined ? client : { ...client, oauthError: Effect.sync(oauthError) }
}
