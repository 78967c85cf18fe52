/**
 * Where effect-smtp spends its CPU: for a case of the server or client suite, effect-smtp runs
 * from the sources (so every frame names its module) with `--cpu-prof` under the same load,
 * and the profile of the measured run alone is summarised by area and function.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs"
import * as path from "node:path"
import { analyze, type Breakdown, type CpuProfile, groups } from "../lib/cpuprofile.ts"
import { NodeChild, pinning } from "../lib/proc.ts"
import { clientCases } from "./client.ts"
import { nodeServer, runCase, serverCases, startSmtpSink, summarize } from "./server.ts"

const pct = (x: number) => `${(x * 100).toFixed(1).padStart(5)} %`

const profileArgs = (dir: string) => ["--cpu-prof", `--cpu-prof-dir=${dir}`, "--cpu-prof-interval=500"]

const freshDir = (outDir: string, name: string) => {
  const dir = path.join(outDir, "profile", name)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  return dir
}

const readProfile = (root: string, dir: string, window: readonly [number, number] | undefined) => {
  const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"))
  if (file === undefined) throw new Error(`no profile written in ${dir}`)
  const profile = JSON.parse(readFileSync(path.join(dir, file), "utf8")) as CpuProfile
  return { breakdown: analyze(profile, root, window), file: path.relative(root, path.join(dir, file)) }
}

const render = (title: string, b: Breakdown, file: string) =>
  [
    `${title}, busy ${(b.busyMs / 1000).toFixed(2)} s, idle ${(b.idleMs / 1000).toFixed(2)} s; profile: ${file}`,
    "",
    "Share of busy time by group:",
    ...groups(b).slice(0, 10).map((g) => `  ${pct(g.share)}  ${g.group}`),
    "",
    "By area:",
    ...b.areas.slice(0, 20).map((a) => `  ${pct(a.share)}  ${a.area}`),
    "",
    "Top functions (self time):",
    ...b.functions.slice(0, 25).map((f) => `  ${pct(f.share)}  ${f.fn}`)
  ].join("\n")

export const profileServer = async (root: string, outDir: string, scale: number, caseId: string): Promise<string> => {
  const c = serverCases(scale).find((x) => x.id === caseId)
  if (c === undefined) throw new Error(`no server case ${caseId}`)
  const dir = freshDir(outDir, `server-${c.id}`)
  const profiled = nodeServer("effect-smtp", path.join(root, "bench/servers/effect-smtp.ts"), profileArgs(dir))
  const [result] = await runCase([profiled], { mode: "sink", load: c.load, reps: 1, timeoutMs: 120_000 })
  if (result === undefined) throw new Error("no profiled run")
  // Only the measured run counts: start-up and warm-up are left out.
  const { breakdown, file } = readProfile(root, dir, result.runs[0]?.window)
  const s = summarize(result, c.unit)
  const title = `Profile of effect-smtp's server, ${c.label} (${c.load.messages} msgs; under the profiler ` +
    `${Math.round(s.rate).toLocaleString("en-US")} ${c.unit}, ${Math.round(s.cpuPerMessage * 1e6).toLocaleString("en-US")} µs CPU/msg)`
  return render(title, breakdown, file)
}

/** The same for effect-smtp's client sending to smtp-sink. */
export const profileClient = async (root: string, outDir: string, scale: number, caseId: string): Promise<string> => {
  const c = clientCases(scale).find((x) => x.id === caseId)
  if (c === undefined) throw new Error(`no client case ${caseId}`)
  const dir = freshDir(outDir, `client-${c.id}`)
  const sink = await startSmtpSink(pinning.load)
  try {
    const { child } = await NodeChild.start({
      script: path.join(root, "bench/clients/effect-smtp.ts"),
      nodeArgs: profileArgs(dir),
      core: pinning.measured
    })
    const request = { type: "send", port: sink.port, mode: c.mode, connections: c.connections, size: c.size }
    let window: readonly [number, number]
    let seconds: number
    try {
      await child.request({ ...request, messages: c.size > 1024 * 1024 ? 1 : 500 }) // warm-up
      const answer = await child.request({ ...request, messages: c.messages }, 180_000)
      window = [Number(answer.startedUs), Number(answer.clockUs)]
      seconds = Number(answer.seconds)
    } finally {
      await child.stop()
    }
    const { breakdown, file } = readProfile(root, dir, window)
    const rate = c.unit === "msg/s" ? c.messages / seconds : c.messages * c.size / 1e6 / seconds
    const title = `Profile of effect-smtp's client, ${c.label} (${c.messages} msgs to smtp-sink; under the profiler ` +
      `${Math.round(rate).toLocaleString("en-US")} ${c.unit})`
    return render(title, breakdown, file)
  } finally {
    await sink.stop()
  }
}
