/**
 * What a listener of this package's own `Network`s can do besides `accept`: hand each connection
 * over as it is accepted, rather than queue it for a fiber that takes it a scheduler turn later
 * (a server accepting a connection per message pays that turn every time). Internal: the server
 * uses it where a listener has it; any other listener is served through `accept`.
 */
import type { Listener, Transport } from "../../Transport.ts"

const kHandover = Symbol.for("effect-smtp/Listener/handover")

/** Gets every connection accepted from now on, as it is accepted (called outside any fiber). */
export type Taker = (transport: Transport) => void

export interface Handover {
  /** Connections go to `taker` from now on; with `undefined`, to `accept` again. */
  readonly [kHandover]: (taker: Taker | undefined) => void
}

/**
 * `listener` with the ability to hand connections over, set by `take`. Not enumerable: a
 * wrapper made with a spread (`{ ...listener, accept }`, to see every connection) does not
 * inherit it, and is served through its own `accept`.
 */
export const withHandover = <L extends Listener>(listener: L, take: (taker: Taker | undefined) => void): L & Handover =>
  Object.defineProperty(listener, kHandover, { value: take, enumerable: false }) as L & Handover

/** The listener's handover, when it has one. */
export const handover = (listener: Listener): ((taker: Taker | undefined) => void) | undefined =>
  (listener as Partial<Handover>)[kHandover]
