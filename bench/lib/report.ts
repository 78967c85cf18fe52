/** Medians, units, targets and the results table. */

export const median = (xs: ReadonlyArray<number>): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

const KiB = 1024
const MiB = 1024 * 1024

const grouped = (x: number, digits = 0) =>
  x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

/** How a measured number reads, and which way is better. */
export type Unit = "msg/s" | "MB/s" | "cpu" | "bytes" | "seconds"

const higherIsBetter = (unit: Unit): boolean => unit === "msg/s" || unit === "MB/s"

export const format = (value: number, unit: Unit): string => {
  if (!Number.isFinite(value)) return "n/a"
  switch (unit) {
    case "msg/s":
      return `${grouped(value)} msg/s`
    case "MB/s":
      return `${grouped(value)} MB/s`
    case "bytes":
      return Math.abs(value) < MiB
        ? `${grouped(value / KiB, 1)} KiB`
        : `${grouped(value / MiB, Math.abs(value) < 10 * MiB ? 1 : 0)} MiB`
    case "cpu":
    case "seconds":
      // seconds, shown in the unit that keeps 2-3 significant digits
      return value < 1e-3 ? `${grouped(value * 1e6)} µs` : value < 1 ? `${grouped(value * 1e3, 1)} ms` : `${grouped(value, 2)} s`
  }
}

/**
 * The issue's target for a row: on the ratio effect-smtp ÷ peer (`ratio`), or on
 * effect-smtp's own value (`value`, e.g. ≤ 10 KiB per idle connection).
 */
export type Target =
  | { readonly on: "ratio"; readonly op: ">=" | "<="; readonly value: number }
  | { readonly on: "value"; readonly op: "<=" | "<"; readonly value: number }

/** One line of the results: a metric of one case for effect-smtp and for a peer. */
export interface Row {
  readonly suite: string
  /** The case's id (a–e, conns, client-one…), as `--only` and `--profile` take it. */
  readonly id: string
  readonly case: string
  readonly metric: string
  readonly unit: Unit
  readonly ours: number
  readonly peerName: string
  readonly peer: number
  /** Undefined: reported without a target. */
  readonly target?: Target | undefined
  /** Extra context (the load generator's CPU share, other peers' values…). */
  readonly note?: string | undefined
}

const ratio = (row: Row): number => row.ours / row.peer

const compare = (x: number, op: ">=" | "<=" | "<", bound: number) =>
  op === ">=" ? x >= bound : op === "<=" ? x <= bound : x < bound

/** Whether a row meets its target (undefined: no target, or nothing to compare). */
const meets = (row: Row): boolean | undefined => {
  const t = row.target
  if (t === undefined) return undefined
  const x = t.on === "ratio" ? ratio(row) : row.ours
  return Number.isFinite(x) ? compare(x, t.op, t.value) : false
}

const opText = { ">=": "≥", "<=": "≤", "<": "<" } as const

const formatTarget = (row: Row): string => {
  const t = row.target
  if (t === undefined) return "—"
  const bound = t.on === "ratio" ? `${t.value.toFixed(2)}×` : format(t.value, row.unit)
  return `${opText[t.op]} ${bound} ${meets(row) ? "✓" : "✗"}`
}

const formatRatio = (row: Row): string => {
  const r = ratio(row)
  return Number.isFinite(r) ? `${r.toFixed(2)}×` : "n/a"
}

const pad = (s: string, n: number, right = false) => right ? s.padStart(n) : s.padEnd(n)

/** A Markdown table (aligned, so it also reads well in a terminal). */
export const table = (rows: ReadonlyArray<Row>): string => {
  const header = ["case", "metric", "effect-smtp", "peer", "peer value", "ratio", "target", "note"]
  const body = rows.map((r) => [
    r.case,
    `${r.metric} (${higherIsBetter(r.unit) ? "higher" : "lower"} is better)`,
    format(r.ours, r.unit),
    r.peerName,
    format(r.peer, r.unit),
    formatRatio(r),
    formatTarget(r),
    r.note ?? ""
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
  const numeric = new Set([2, 4, 5])
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((c, i) => pad(c, widths[i]!, numeric.has(i))).join(" | ")} |`
  const rule = `|${widths.map((w, i) => numeric.has(i) ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2)).join("|")}|`
  return [line(header), rule, ...body.map(line)].join("\n")
}

/** "Targets met: 9 of 20", and the ones missed. */
export const targetSummary = (rows: ReadonlyArray<Row>): string => {
  const targeted = rows.filter((r) => r.target !== undefined)
  const missed = targeted.filter((r) => meets(r) === false)
  const lines = [`targets met: ${targeted.length - missed.length} of ${targeted.length}`]
  for (const r of missed) lines.push(`  ✗ ${r.id} ${r.case}: ${r.metric} vs ${r.peerName}, ${formatRatio(r)} (${format(r.ours, r.unit)}), target ${formatTarget(r).slice(0, -2)}`)
  return lines.join("\n")
}
