/**
 * The listener side of the PROXY protocol, shared by every `Network`: who may send a header,
 * reading it within the timeout, and the connection as the header describes it. A connection
 * that fails any of it is closed and never reaches `accept`.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as ProxyProtocol from "../../ProxyProtocol.ts"
import {
  type Endpoint,
  formatEndpoint,
  type ProxyProtocolOptions,
  type Transport,
  TransportError
} from "../../Transport.ts"
import * as IpNetworks from "./IpNetworks.ts"
import { TransportView } from "./TransportView.ts"

/** Postfix's `smtpd_upstream_proxy_timeout`: a proxy sends its header at once. */
const DEFAULT_TIMEOUT = Duration.seconds(5)

export interface Acceptor {
  /**
   * Reads the header from `transport` and returns the connection it describes; closes the
   * connection and returns `undefined` when the peer is not trusted or the header is bad, late
   * or missing. `unread` gives back the bytes that came after the header in the same read.
   */
  readonly accept: (transport: Transport, unread: (rest: Uint8Array) => Transport) => Effect.Effect<Transport | undefined>
}

const concat = (a: Uint8Array, b: Uint8Array) => {
  if (a.length === 0) return b
  const out = new Uint8Array(a.length + b.length)
  out.set(a, 0)
  out.set(b, a.length)
  return out
}

type Refusal = { readonly level: "debug" | "info" | "warning"; readonly message: string }

/** Reads until the bytes are a whole header or cannot become one. */
const readHeader = (transport: Transport) =>
  Effect.gen(function*() {
    let bytes: Uint8Array = new Uint8Array(0)
    while (true) {
      const chunk = yield* transport.read
      if (chunk === undefined) {
        return yield* Effect.fail<Refusal>({
          level: bytes.length === 0 ? "debug" : "warning",
          message: bytes.length === 0 ? "closed before sending a PROXY header" : "closed within its PROXY header"
        })
      }
      bytes = concat(bytes, chunk)
      const parsed = ProxyProtocol.parse(bytes)
      if (parsed._tag === "Invalid") return yield* Effect.fail<Refusal>({ level: "warning", message: `invalid PROXY header: ${parsed.reason}` })
      if (parsed._tag === "Complete") return { header: parsed.header, rest: bytes.subarray(parsed.length) }
    }
  })

/** Checks the options; a bad network is the message of a `Listen` failure. */
export const make = (options: ProxyProtocolOptions): Result.Result<Acceptor, string> => {
  if (options.trusted.length === 0) return Result.fail("proxyProtocol.trusted is empty: nobody could connect")
  const networks = IpNetworks.parse(options.trusted)
  if (Result.isFailure(networks)) return Result.fail(`proxyProtocol.trusted: ${networks.failure}`)
  const timeout = options.timeout === undefined ? DEFAULT_TIMEOUT : Duration.fromInputUnsafe(options.timeout)
  // A Unix socket peer has no address: the socket's permissions decide who connects.
  const trusts = (peer: Endpoint | undefined) => peer?._tag !== "Tcp" || networks.success.contains(peer.host)

  const accept = (transport: Transport, unread: (rest: Uint8Array) => Transport) => {
    const peer = transport.remoteEndpoint
    const from = peer === undefined ? "a local peer" : formatEndpoint(peer)
    const refuse = (r: Refusal) => {
      const message = `connection from ${from} closed: ${r.message}`
      const log = r.level === "debug" ? Effect.logDebug(message) : r.level === "info" ? Effect.logInfo(message) : Effect.logWarning(message)
      return Effect.as(Effect.andThen(log, transport.close), undefined)
    }
    if (!trusts(peer)) return refuse({ level: "info", message: "not a trusted proxy (proxyProtocol.trusted)" })
    return readHeader(transport).pipe(
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () => Effect.fail<Refusal>({ level: "debug", message: `no PROXY header within ${Duration.format(timeout)}` })
      }),
      Effect.catchTag("TransportError", (e: TransportError) =>
        Effect.fail<Refusal>({ level: "debug", message: `failed before its PROXY header: ${e.message}` })),
      Effect.matchEffect({
        onFailure: refuse,
        onSuccess: ({ header, rest }): Effect.Effect<Transport | undefined> => {
          const t = rest.length > 0 ? unread(rest) : transport
          // LOCAL, UNKNOWN and UNSPEC: the proxy speaks for itself; the real endpoints stay.
          return Effect.succeed(
            new TransportView(t, {
              remoteEndpoint: header.source ?? t.remoteEndpoint,
              localEndpoint: header.destination ?? t.localEndpoint,
              proxy: { header, proxy: peer }
            })
          )
        }
      }),
      Effect.onInterrupt(() => transport.close)
    )
  }
  return Result.succeed({ accept })
}

/** A `Listen` failure for bad options. */
export const listenError = (endpoint: Endpoint, message: string) =>
  new TransportError({ reason: "Listen", message: `cannot listen on ${formatEndpoint(endpoint)}: ${message}` })
