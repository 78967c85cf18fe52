/** The server's metrics: counters a deployment can export with Effect's metric layers. */
import * as Metric from "effect/Metric"

export const connections = Metric.counter("smtp_server_connections_total", { description: "connections accepted" })
export const connectionsRefused = Metric.counter("smtp_server_connections_refused_total", {
  description: "connections refused by the connection limits"
})
export const activeConnections = Metric.gauge("smtp_server_connections_active", { description: "open connections" })
export const messages = Metric.counter("smtp_server_messages_total", { description: "messages accepted" })
export const bytes = Metric.counter("smtp_server_message_bytes_total", { description: "message body bytes received" })
const rejections = Metric.counter("smtp_server_rejections_total", {
  description: "negative replies sent, by reply code"
})
export const tlsUpgrades = Metric.counter("smtp_server_starttls_total", { description: "successful STARTTLS upgrades" })
export const tlsFailures = Metric.counter("smtp_server_starttls_failures_total", { description: "failed TLS handshakes" })
export const authFailures = Metric.counter("smtp_server_auth_failures_total", { description: "failed AUTH attempts" })

/** The rejections counter for one reply code (made once per code). */
const rejectionsByCode = new Map<number, Metric.Metric<number, unknown>>()
export const rejectionsOf = (code: number) => {
  let m = rejectionsByCode.get(code)
  if (m === undefined) {
    m = Metric.withAttributes(rejections, { code: String(code) })
    rejectionsByCode.set(code, m)
  }
  return m
}
