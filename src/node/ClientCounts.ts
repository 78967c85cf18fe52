/**
 * `serve --workers N`: the connections of each client address over all the workers, kept by the
 * supervisor, so that `--max-connections-per-ip` holds for the whole server and not N times over
 * (Postfix's anvil does this for its smtpd processes). Each worker still applies the limit to its
 * own connections first; a connection it accepts is then admitted here, or refused with 421.
 */

export class ClientCounts {
  private readonly total = new Map<string, number>()
  private readonly perWorker = new Map<number, Map<string, number>>()

  readonly limit: number

  constructor(limit: number) {
    this.limit = limit
  }

  /** A new connection from `ip` on `worker`: counted and true, or false when `ip` is at the limit. */
  admit(worker: number, ip: string): boolean {
    const n = this.total.get(ip) ?? 0
    if (n >= this.limit) return false
    this.total.set(ip, n + 1)
    let own = this.perWorker.get(worker)
    if (own === undefined) this.perWorker.set(worker, own = new Map())
    own.set(ip, (own.get(ip) ?? 0) + 1)
    return true
  }

  /** A connection that was admitted has ended. */
  release(worker: number, ip: string): void {
    const own = this.perWorker.get(worker)
    const n = own?.get(ip)
    if (own === undefined || n === undefined) return // not admitted here, or its worker already forgotten
    if (n > 1) own.set(ip, n - 1)
    else own.delete(ip)
    this.drop(ip, 1)
  }

  /** The worker exited: its connections went with it. */
  forget(worker: number): void {
    const own = this.perWorker.get(worker)
    if (own === undefined) return
    this.perWorker.delete(worker)
    for (const [ip, n] of own) this.drop(ip, n)
  }

  /** Connections from `ip` now, over all workers. */
  count(ip: string): number {
    return this.total.get(ip) ?? 0
  }

  private drop(ip: string, n: number): void {
    const left = (this.total.get(ip) ?? 0) - n
    if (left > 0) this.total.set(ip, left)
    else this.total.delete(ip)
  }
}
