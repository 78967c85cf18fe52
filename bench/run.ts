/**
 * effect-smtp benchmarks against the peer libraries, in one run on one machine.
 * Run with `npm run bench` (see bench/README.md). Options:
 *   --only server,client,memory   which suites (default: all)
 *   --reps N                      measured runs per case, the median is reported (default 3)
 *   --scale X                     multiplies the message counts (default 1)
 *   --profile                     also profile effect-smtp (server: 32 sessions, 100 MiB; client:
 *                                 one connection, 100 MiB); summaries in .bench/profile-*.txt
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { bundle } from "./lib/build.ts"
import { pinning } from "./lib/proc.ts"
import { type Row, table } from "./lib/report.ts"
import { clientSuite } from "./suites/client.ts"
import { profileClient, profileServer } from "./suites/profile.ts"
import { memorySuite, nodeServer, serverSuite, SMTP_SINK, SMTP_SOURCE } from "./suites/server.ts"

const { values } = parseArgs({
  options: {
    only: { type: "string", default: "server,client,memory" },
    reps: { type: "string", default: "3" },
    scale: { type: "string", default: "1" },
    profile: { type: "boolean", default: false }
  }
})
const suites = new Set(values.only.split(",").map((s) => s.trim()))
const reps = Math.max(1, Number(values.reps))
const scale = Number(values.scale) > 0 ? Number(values.scale) : 1

const root = path.resolve(import.meta.dirname, "..")
const outDir = path.join(root, ".bench")
const log = (s: string) => process.stderr.write(`${s}\n`)

for (const program of [SMTP_SOURCE, SMTP_SINK]) {
  if (!existsSync(program)) {
    log(`${program} is missing: install Postfix's test programs first (npm run peers)`)
    process.exit(1)
  }
}
mkdirSync(outDir, { recursive: true })

const started = Date.now()
const pinningText = pinning.enabled ? `measured process on CPU ${pinning.measured}, load on CPU ${pinning.load}` : "no CPU pinning"
log(`node ${process.version}, ${pinningText}, load average ${loadavg().map((x) => x.toFixed(2)).join(" ")}`)
if (loadavg()[0]! > 1) log("warning: the machine is busy with other work; absolute numbers will be low and noisy (ratios less so)")

const clientAvailable = existsSync(path.join(root, "src/SmtpClient.ts"))
const bundles = await bundle({
  "effect-smtp-server": path.join(root, "bench/servers/effect-smtp.ts"),
  "smtp-server": path.join(root, "bench/servers/smtp-server.ts"),
  ...(clientAvailable && suites.has("client") ? {
    "effect-smtp-client": path.join(root, "bench/clients/effect-smtp.ts"),
    "nodemailer": path.join(root, "bench/clients/nodemailer.ts")
  } : {})
}, path.join(outDir, "build"))
const servers = {
  ours: nodeServer("effect-smtp", bundles["effect-smtp-server"]!),
  peer: nodeServer("smtp-server", bundles["smtp-server"]!)
}

const rows: Array<Row> = []
const raw: Record<string, unknown> = {}

if (suites.has("server")) {
  const r = await serverSuite(servers, reps, scale)
  rows.push(...r.rows)
  raw.server = r.raw
}
if (suites.has("client")) {
  if (bundles["effect-smtp-client"] === undefined) {
    log("client: src/SmtpClient.ts does not exist yet, skipped")
  } else {
    const r = await clientSuite({ ours: bundles["effect-smtp-client"], peer: bundles["nodemailer"]! }, reps, scale)
    rows.push(...r.rows)
    raw.client = r.raw
  }
}
if (suites.has("memory")) {
  const r = await memorySuite(servers, reps)
  rows.push(...r.rows)
  raw.memory = r.raw
}

if (rows.length > 0) {
  const report = [
    `effect-smtp benchmarks — ${new Date().toISOString()}, node ${process.version}, median of ${reps} run(s)`,
    "ratio = effect-smtp ÷ peer (✓ where effect-smtp is better or equal)",
    "",
    table(rows)
  ].join("\n")
  console.log(`\n${report}\n`)
  writeFileSync(path.join(outDir, "results.md"), `${report}\n`)
  writeFileSync(path.join(outDir, "results.json"), JSON.stringify({ date: new Date().toISOString(), node: process.version, reps, scale, rows, raw }, null, 2))
}

if (values.profile) {
  const profiles = [
    ["server-32x1k", () => profileServer(root, outDir, scale, "32x1k")],
    ["server-100m", () => profileServer(root, outDir, scale, "100m")],
    ...(clientAvailable
      ? [["client-one", () => profileClient(root, outDir, scale, "one")], ["client-100m", () => profileClient(root, outDir, scale, "100m")]] as const
      : [])
  ] as const
  for (const [name, profile] of profiles) {
    log(`profile: ${name}…`)
    const text = await profile()
    console.log(`\n${text}\n`)
    writeFileSync(path.join(outDir, `profile-${name}.txt`), `${text}\n`)
  }
}
log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s; results in .bench/`)
