/**
 * The mechanisms without a secret in the exchange: ANONYMOUS (RFC 4505), whose one message
 * is trace information, and EXTERNAL (RFC 4422 appendix A), whose credential is the TLS
 * client certificate and whose one message is the authzid asked for. Server and client halves.
 */
import * as Effect from "effect/Effect"
import type { AuthResult, ClientMechanism, ExchangeOptions, ServerContext, ServerMechanism } from "../../Sasl.ts"
import type { PeerCertificate } from "../../Transport.ts"
import * as Bytes from "./bytes.ts"
import type { SaslError } from "./error.ts"
import { fail } from "./error.ts"
import { clientFirst, EMPTY, hasNul, invalid, mechanism, scripted, success, utf8OrFail } from "./exchange.ts"

/** Accepts or refuses an ANONYMOUS login, given its trace information (RFC 4505). */
export type AnonymousVerifier = (input: { readonly trace: string }) => Effect.Effect<AuthResult, SaslError>

/**
 * Maps a TLS client certificate (and the identity the client asks for, if any) to an
 * identity (EXTERNAL, RFC 4422 appendix A).
 */
export type ExternalVerifier = (input: {
  readonly authzid: string | undefined
  readonly certificate: PeerCertificate
  /** Whether the certificate verified against the trusted CAs (always true unless `allowUnverified`). */
  readonly authorized: boolean
}) => Effect.Effect<AuthResult, SaslError>

// --- ANONYMOUS ---------------------------------------------------------------------------

// The "trace" stringprep profile's prohibited output (RFC 4505 section 3, RFC 3454 tables
// C.2.1, C.2.2, C.3, C.4, C.5, C.6, C.8, C.9). Its bidi check is not applied.
const prohibitedInTrace = (cp: number): boolean =>
  cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || // C.2.1, C.2.2 controls
  cp === 0x06dd || cp === 0x070f || cp === 0x180e || cp === 0xfeff ||
  (cp >= 0x200c && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
  (cp >= 0x2060 && cp <= 0x2063) || (cp >= 0x206a && cp <= 0x206f) ||
  (cp >= 0x1d173 && cp <= 0x1d17a) ||
  (cp >= 0x0340 && cp <= 0x0341) || // C.8
  (cp >= 0xe000 && cp <= 0xf8ff) || cp >= 0xf0000 || // C.3 private use
  (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe || // C.4 non-characters
  (cp >= 0xd800 && cp <= 0xdfff) || // C.5
  (cp >= 0xfff9 && cp <= 0xfffd) || // C.6
  cp === 0xe0001 || (cp >= 0xe0020 && cp <= 0xe007f) // C.9

/** Whether `trace` is valid ANONYMOUS trace information: at most 255 characters, none prohibited. */
export const isValidTrace = (trace: string): boolean => {
  let count = 0
  for (const ch of trace) {
    if (++count > 255 || prohibitedInTrace(ch.codePointAt(0)!)) return false
  }
  return true
}

/** ANONYMOUS: one message of optional trace information (an email address or a token). */
export const anonymousServer = (verify: AnonymousVerifier, options?: ExchangeOptions): ServerMechanism =>
  mechanism("ANONYMOUS", true, () =>
    clientFirst("ANONYMOUS", (message) =>
      utf8OrFail(message, "ANONYMOUS", "trace").pipe(
        Effect.flatMap((trace) =>
          isValidTrace(trace)
            ? verify({ trace }).pipe(Effect.map((r) => success(r.identity, undefined)))
            : fail("MalformedResponse", "invalid trace information", "ANONYMOUS")
        )
      )), options)

/** ANONYMOUS (RFC 4505): the initial response is the trace information (may be empty). */
export const anonymous = (credentials: { readonly trace?: string | undefined } = {}): ClientMechanism => ({
  name: "ANONYMOUS",
  sendsSecret: false,
  client: Effect.suspend(() => {
    const trace = credentials.trace ?? ""
    if (!isValidTrace(trace)) return invalid("ANONYMOUS", "invalid trace information")
    return Effect.succeed(scripted("ANONYMOUS", Bytes.utf8(trace), () => Effect.succeed(EMPTY), 0))
  })
})

// --- EXTERNAL ----------------------------------------------------------------------------

/**
 * EXTERNAL: the client's TLS certificate is the credential; its one message is the
 * authzid it asks for (empty: whatever the certificate maps to). By default only a
 * certificate that verified against the trusted CAs is accepted.
 */
export const externalServer = (
  verify: ExternalVerifier,
  options?: ExchangeOptions & {
    /** Pass unverified certificates to the verifier too (for pinning by fingerprint). Default false. */
    readonly allowUnverified?: boolean | undefined
  }
): ServerMechanism => {
  const usable = (context: ServerContext) =>
    context.tls?.peerCertificate !== undefined && (context.tls.authorized || options?.allowUnverified === true)
  return mechanism("EXTERNAL", true, (context) =>
    clientFirst("EXTERNAL", (message) => {
      const tls = context.tls
      if (tls === undefined || tls.peerCertificate === undefined || !usable(context)) {
        return fail("AuthenticationFailed", "no verified client certificate", "EXTERNAL")
      }
      const certificate = tls.peerCertificate
      return utf8OrFail(message, "EXTERNAL", "authzid").pipe(
        Effect.flatMap((authzid) =>
          hasNul(authzid)
            ? fail("MalformedResponse", "NUL in authzid", "EXTERNAL")
            : verify({ authzid: authzid === "" ? undefined : authzid, certificate, authorized: tls.authorized })
        ),
        Effect.map((r) => success(r.identity, undefined))
      )
    }), options, usable)
}

/** EXTERNAL (RFC 4422 appendix A): the initial response is the authzid, empty for "what my certificate says". */
export const external = (credentials: { readonly authzid?: string | undefined } = {}): ClientMechanism => ({
  name: "EXTERNAL",
  sendsSecret: false,
  client: Effect.suspend(() => {
    const authzid = credentials.authzid ?? ""
    if (hasNul(authzid)) return invalid("EXTERNAL", "NUL in authzid")
    return Effect.succeed(scripted("EXTERNAL", Bytes.utf8(authzid), () => Effect.succeed(EMPTY), 0))
  })
})
