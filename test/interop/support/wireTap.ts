/**
 * A `Network` that records what every accepted connection reads, chunk by chunk (after TLS,
 * as the server sees it), so a test can see how a real client wrote its commands: MAIL, RCPT
 * and DATA in one write means PIPELINING, a BDAT command means CHUNKING.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NodeTransport from "../../../src/NodeTransport.ts"
import { Network, type Transport } from "../../../src/Transport.ts"

export interface WireTap {
  /** Every connection's reads so far, in order, as latin1 text. */
  readonly connections: ReadonlyArray<ReadonlyArray<string>>
  /** Node's network, with accepted connections recorded. */
  readonly layer: Layer.Layer<Network>
}

const recording = (t: Transport, reads: Array<string>): Transport => ({
  read: Effect.map(t.read, (chunk) => {
    if (chunk !== undefined) reads.push(Buffer.from(chunk).toString("latin1"))
    return chunk
  }),
  write: (data) => t.write(data),
  writeUnsafe: (data) => t.writeUnsafe(data),
  upgradeTls: (options) => t.upgradeTls(options),
  tls: () => t.tls(),
  get localEndpoint() {
    return t.localEndpoint
  },
  get remoteEndpoint() {
    return t.remoteEndpoint
  },
  close: t.close
})

export const make = (): WireTap => {
  const connections: Array<Array<string>> = []
  const layer = Layer.effect(
    Network,
    Effect.map(Effect.service(Network), (network) =>
      Network.of({
        listen: (options) =>
          Effect.map(network.listen(options), (listener) => ({
            ...listener,
            accept: Effect.map(listener.accept, (t) => {
              const reads: Array<string> = []
              connections.push(reads)
              return recording(t, reads)
            })
          })),
        connect: network.connect
      }))
  ).pipe(Layer.provide(NodeTransport.layer))
  return { connections, layer }
}
