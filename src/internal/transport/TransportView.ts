/**
 * A `Transport` that is another one with some of its members replaced: a wrapper, not a copy.
 * A spread (`{ ...t }`) would miss the members that live on a prototype, as a Node
 * connection's do, and would read every getter (an endpoint read from the socket) at once.
 */
import type * as Effect from "effect/Effect"
import type { Endpoint, TlsState, Transport, TransportError } from "../../Transport.ts"
import type { ProxyInfo } from "../../ProxyProtocol.ts"

/** What a view replaces; a member not given is the inner transport's. */
export type Overrides = Partial<Transport>

export class TransportView implements Transport {
  readonly inner: Transport
  readonly overrides: Overrides
  constructor(inner: Transport, overrides: Overrides) {
    this.inner = inner
    this.overrides = overrides
  }
  get read(): Effect.Effect<Uint8Array | undefined, TransportError> {
    return this.overrides.read ?? this.inner.read
  }
  write(data: Uint8Array | string): Effect.Effect<void, TransportError> {
    const o = this.overrides.write
    return o !== undefined ? o(data) : this.inner.write(data)
  }
  writeUnsafe(data: Uint8Array | string): Effect.Effect<void, TransportError> {
    const o = this.overrides.writeUnsafe
    return o !== undefined ? o(data) : this.inner.writeUnsafe(data)
  }
  upgradeTls(options: Parameters<Transport["upgradeTls"]>[0]): Effect.Effect<void, TransportError> {
    const o = this.overrides.upgradeTls
    return o !== undefined ? o(options) : this.inner.upgradeTls(options)
  }
  tls(): TlsState | undefined {
    const o = this.overrides.tls
    return o !== undefined ? o() : this.inner.tls()
  }
  get localEndpoint(): Endpoint | undefined {
    return "localEndpoint" in this.overrides ? this.overrides.localEndpoint : this.inner.localEndpoint
  }
  get remoteEndpoint(): Endpoint | undefined {
    return "remoteEndpoint" in this.overrides ? this.overrides.remoteEndpoint : this.inner.remoteEndpoint
  }
  get proxy(): ProxyInfo | undefined {
    return "proxy" in this.overrides ? this.overrides.proxy : this.inner.proxy
  }
  get close(): Effect.Effect<void> {
    return this.overrides.close ?? this.inner.close
  }
}
