/** Medians, units and the results table. */

export const median = (xs: ReadonlyArray<number>): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

const MiB = 1024 * 1024

const grouped = (x: number, digits = 0) =>
  x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

/** How a measured number reads, and which way is better. */
export type Unit = "msg/s" | "MB/s" | "cpu" | "bytes" | "percent"

export const higherIsBetter = (unit: Unit): boolean => unit === "msg/s" || unit === "MB/s"

export const format = (value: number, unit: Unit): string => {
  if (!Number.isFinite(value)) return "n/a"
  switch (unit) {
    case "msg/s":
      return `${grouped(value)} msg/s`
    case "MB/s":
      return `${grouped(value)} MB/s`
    case "percent":
      return `${grouped(value * 100)} %`
    case "bytes":
      return `${grouped(value / MiB, value < 10 * MiB ? 1 : 0)} MiB`
    case "cpu":
      // seconds of CPU, shown in the unit that keeps 2-3 significant digits
      return value < 1e-3 ? `${grouped(value * 1e6)} µs` : value < 1 ? `${grouped(value * 1e3, 1)} ms` : `${grouped(value, 2)} s`
  }
}

/** One line of the results: a metric of one case for effect-smtp and for a peer. */
export interface Row {
  readonly suite: string
  readonly case: string
  readonly metric: string
  readonly unit: Unit
  readonly ours: number
  readonly peerName: string
  readonly peer: number
  /** Extra columns shown for context (e.g. the C reference program). */
  readonly note?: string
}

export const ratio = (row: Row): number => row.ours / row.peer

const formatRatio = (row: Row): string => {
  const r = ratio(row)
  if (!Number.isFinite(r)) return "n/a"
  const better = higherIsBetter(row.unit) ? r >= 1 : r <= 1
  return `${r.toFixed(2)}× ${better ? "✓" : "✗"}`
}

const pad = (s: string, n: number, right = false) => right ? s.padStart(n) : s.padEnd(n)

/** A Markdown table (aligned, so it also reads well in a terminal). */
export const table = (rows: ReadonlyArray<Row>): string => {
  const header = ["case", "metric", "effect-smtp", "peer", "peer value", "ratio", "note"]
  const body = rows.map((r) => [
    r.case,
    `${r.metric} (${higherIsBetter(r.unit) ? "higher" : "lower"} is better)`,
    format(r.ours, r.unit),
    r.peerName,
    format(r.peer, r.unit),
    formatRatio(r),
    r.note ?? ""
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
  const numeric = new Set([2, 4, 5])
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((c, i) => pad(c, widths[i]!, numeric.has(i))).join(" | ")} |`
  const rule = `|${widths.map((w, i) => numeric.has(i) ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2)).join("|")}|`
  return [line(header), rule, ...body.map(line)].join("\n")
}
