/**
 * effect-smtp benchmarks against the peer libraries, in one run on one machine, on the package
 * as it ships (dist/, imported the way the README shows). Run with `npm run bench` (see
 * bench/README.md). Options:
 *   --only LIST        suites (server, memory, client, workers) and/or case ids (a, b, c, d, e,
 *                      idle, conns, 1g, client-one, client-pool, client-own, client-own-bdat,
 *                      client-100m, workers), comma-separated; default: every suite
 *   --reps N           measured runs per case, the median is reported (default 3)
 *   --scale X          multiplies the message and connection counts (default 1; 0.1 for a quick look)
 *   --bundled          also run effect-smtp's server bundled by esbuild, as labelled extra rows
 *   --floor            also run a plain-Node callback sink (servers/plain-node.ts), as labelled extra rows
 *   --profile [LIST]   CPU profiles of effect-smtp for these case ids (default b,d,client-one,client-100m);
 *                      alone it runs no suite (add --only for both); summaries in .bench/profile-*.txt
 *   --profile-from dist|src   profile the shipped dist/ (default; frames mapped to src/ by source maps)
 *                      or the TypeScript sources (node --conditions=source)
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { availableParallelism, loadavg } from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { bundleChild, checkDist, compileChildren } from "./lib/build.ts"
import { pinning } from "./lib/proc.ts"
import type { Program } from "./lib/programs.ts"
import { type Row, table, targetSummary } from "./lib/report.ts"
import { SMTP_SINK, SMTP_SOURCE } from "./lib/servers.ts"
import { clientCases, clientSuite } from "./suites/client.ts"
import { memoryCaseIds, memorySuite } from "./suites/memory.ts"
import { defaultProfiles, profileCase, profileCaseIds } from "./suites/profile.ts"
import { serverCases, serverSuite } from "./suites/server.ts"
import { workersCaseIds, workersSuite } from "./suites/workers.ts"

// A bare `--profile` (no list after it) means the default profiles.
const argv = process.argv.slice(2).flatMap((a, i, all) =>
  a === "--profile" && (i + 1 === all.length || all[i + 1]!.startsWith("--")) ? ["--profile=default"] : [a]
)
const { values } = parseArgs({
  args: argv,
  options: {
    only: { type: "string" },
    reps: { type: "string", default: "3" },
    scale: { type: "string", default: "1" },
    bundled: { type: "boolean", default: false },
    floor: { type: "boolean", default: false },
    profile: { type: "string" },
    "profile-from": { type: "string", default: "dist" }
  }
})
const reps = Math.max(1, Math.floor(Number(values.reps)) || 1)
const scale = Number(values.scale) > 0 ? Number(values.scale) : 1
const list = (s: string) => s.split(",").map((x) => x.trim()).filter((x) => x !== "")

const suiteCases: Readonly<Record<string, ReadonlyArray<string>>> = {
  server: serverCases(1).map((c) => c.id),
  memory: memoryCaseIds,
  client: clientCases(1).map((c) => c.id),
  workers: workersCaseIds
}
const allIds = Object.values(suiteCases).flat()
const only = values.only !== undefined ? list(values.only) : values.profile !== undefined ? [] : Object.keys(suiteCases)
for (const x of only) {
  if (suiteCases[x] === undefined && !allIds.includes(x)) {
    throw new Error(`--only ${x}: not a suite (${Object.keys(suiteCases).join(", ")}) nor a case (${allIds.join(", ")})`)
  }
}
const selected = (id: string) => only.includes(id) || Object.entries(suiteCases).some(([s, ids]) => only.includes(s) && ids.includes(id))
const profiles = values.profile === undefined ? [] : values.profile === "default" ? defaultProfiles : list(values.profile)
for (const p of profiles) {
  if (!profileCaseIds(1).includes(p)) throw new Error(`--profile ${p}: not a case to profile (${profileCaseIds(1).join(", ")})`)
}
const profileFrom = values["profile-from"]
if (profileFrom !== "dist" && profileFrom !== "src") throw new Error("--profile-from: dist or src")

const root = path.resolve(import.meta.dirname, "..")
const outDir = path.join(root, ".bench")
const log = (s: string) => process.stderr.write(`${s}\n`)

for (const program of [SMTP_SOURCE, SMTP_SINK]) {
  if (!existsSync(program)) throw new Error(`${program} is missing: install Postfix's test programs first (npm run peers)`)
}
checkDist(root)
mkdirSync(outDir, { recursive: true })
const js = compileChildren(root, path.join(outDir, "js"))

const server = (name: string, file: string): Program => ({ name, script: js(file), form: "dist" })
const programs = {
  ours: server("effect-smtp", "servers/effect-smtp"),
  oursIndex: server("effect-smtp (index imports)", "servers/effect-smtp-index"),
  peer: { name: "smtp-server", script: js("servers/smtp-server"), form: "peer" } satisfies Program,
  client: { name: "effect-smtp client", script: js("clients/effect-smtp"), form: "dist" } satisfies Program,
  nodemailer: { name: "nodemailer", script: js("clients/nodemailer"), form: "peer" } satisfies Program,
  holder: js("clients/idle")
}
const extra: Array<Program> = [
  ...(values.bundled
    ? [{
      name: "esbuild bundle",
      script: await bundleChild(programs.ours.script, path.join(outDir, "bundle", "effect-smtp.mjs")),
      form: "bundle"
    } satisfies Program]
    : []),
  // What Node alone costs: the gap to smtp-sink is Node's, the gap to effect-smtp the server's.
  ...(values.floor ? [{ name: "plain-Node floor", script: js("servers/plain-node"), form: "floor" } satisfies Program] : [])
]

const machine = (() => {
  const model = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown CPU"
  return `${availableParallelism()} × ${model.trim()}`
})()
const commit = (() => {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" }).trim()
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], { cwd: root, encoding: "utf8" }).trim() !== ""
    return `${head}${dirty ? " (src/ modified)" : ""}`
  } catch {
    return "unknown commit"
  }
})()
const load = () => loadavg().map((x) => x.toFixed(2)).join(" ")

const started = Date.now()
const startLoad = load()
const pinningText = pinning.enabled ? `measured process on CPU ${pinning.measured}, load on CPU ${pinning.load}` : "no CPU pinning"
log(`node ${process.version}, ${machine}, ${pinningText}, load average ${startLoad}`)
if (loadavg()[0]! > 1) log("warning: the machine is busy with other work; absolute numbers will be low and noisy (ratios less so)")

const rows: Array<Row> = []
const raw: Record<string, unknown> = {}
const options = { reps, scale, ids: selected }

if (suiteCases.server!.some(selected)) {
  const r = await serverSuite({ ours: programs.ours, peer: programs.peer, extra }, options)
  rows.push(...r.rows)
  raw.server = r.raw
}
if (suiteCases.memory!.some(selected)) {
  const r = await memorySuite({ ours: programs.ours, oursIndex: programs.oursIndex, peer: programs.peer, holder: programs.holder, extra }, options)
  rows.push(...r.rows)
  raw.memory = r.raw
}
if (suiteCases.workers!.some(selected)) {
  const r = await workersSuite(root, options)
  rows.push(...r.rows)
  raw.workers = r.raw
}
if (suiteCases.client!.some(selected)) {
  const r = await clientSuite({ ours: programs.client, peer: programs.nodemailer, server: programs.ours }, options)
  rows.push(...r.rows)
  raw.client = r.raw
}

if (rows.length > 0) {
  const seconds = ((Date.now() - started) / 1000).toFixed(0)
  const report = [
    `effect-smtp benchmarks — ${new Date().toISOString()}, ${commit}, node ${process.version}, ${machine}`,
    `${pinningText}; median of ${reps} run(s), --scale ${scale}; load average ${startLoad} at the start, ${load()} at the end; ${seconds} s`,
    "ratio = effect-smtp ÷ peer; target: the issue's, on that ratio or on effect-smtp's own value",
    "",
    table(rows),
    "",
    targetSummary(rows)
  ].join("\n")
  console.log(`\n${report}\n`)
  writeFileSync(path.join(outDir, "results.md"), `${report}\n`)
  writeFileSync(
    path.join(outDir, "results.json"),
    JSON.stringify({ date: new Date().toISOString(), commit, node: process.version, machine, reps, scale, rows, raw }, null, 2)
  )
}

for (const id of profiles) {
  log(`profile ${id} (${profileFrom})…`)
  const form = profileFrom
  const text = await profileCase(root, outDir, {
    server: { ...programs.ours, form },
    client: { ...programs.client, form },
    ownServer: programs.ours
  }, scale, id)
  console.log(`\n${text}\n`)
  writeFileSync(path.join(outDir, `profile-${id}.txt`), `${text}\n`)
}
log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s; results in .bench/`)
