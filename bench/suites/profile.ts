/**
 * `--profile`: where effect-smtp spends its CPU in a case. effect-smtp runs as in the
 * measured case (from dist/, its frames mapped back to src/ through the source maps; or from
 * the sources with `--profile-from src`) under `--cpu-prof`, with the case's load after the
 * usual warm-up, and the profile of the measured run alone is summarised by area and function.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs"
import * as path from "node:path"
import { analyze, type Breakdown, type CpuProfile, groups } from "../lib/cpuprofile.ts"
import type { SendAnswer, SendRequest } from "../lib/message.ts"
import { type Program, startProgram } from "../lib/programs.ts"
import { pinning } from "../lib/proc.ts"
import { type Load, nodeServer, runCase, type ServerSpec, startSmtpSink, summarize } from "../lib/servers.ts"
import { clientCases } from "./client.ts"
import { serverCases } from "./server.ts"

const MiB = 1024 * 1024
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

/** Every case `--profile` takes: the server cases, the 1 GiB case and the client cases. */
export const profileCaseIds = (scale: number): ReadonlyArray<string> => [
  ...serverCases(scale).map((c) => c.id),
  "1g",
  ...clientCases(scale).map((c) => c.id)
]

export const defaultProfiles = ["b", "d", "client-one", "client-100m"]

const profileServer = async (root: string, outDir: string, server: Program, scale: number, id: string): Promise<string> => {
  const c = id === "1g"
    ? { id, label: "one 1 GiB message, SHA-256", load: { keepConnection: true, sessions: 1, messages: 1, size: 1024 * MiB } satisfies Load, unit: "MB/s" as const }
    : serverCases(scale).find((x) => x.id === id)
  if (c === undefined) throw new Error(`no server case ${id}`)
  const dir = freshDir(outDir, `server-${c.id}`)
  const plain = nodeServer(server)
  const profiled: ServerSpec = { name: server.name, start: (o) => plain.start({ ...o, nodeArgs: profileArgs(dir) }) }
  const [result] = await runCase([profiled], { mode: id === "1g" ? "hash" : "sink", load: c.load, reps: 1, timeoutMs: 600_000 })
  if (result === undefined) throw new Error("no profiled run")
  // Only the measured run counts: start-up and warm-up are left out.
  const { breakdown, file } = readProfile(root, dir, result.runs[0]?.window)
  const s = summarize(result, c.unit)
  const title = `Profile of effect-smtp's server (${server.form}), ${c.label} (${c.load.messages} msgs; under the profiler ` +
    `${Math.round(s.rate).toLocaleString("en-US")} ${c.unit}, ${Math.round(s.cpuPerMessage * 1e6).toLocaleString("en-US")} µs CPU/msg)`
  return render(title, breakdown, file)
}

const profileClient = async (root: string, outDir: string, programs: { readonly client: Program; readonly server: Program }, scale: number, id: string): Promise<string> => {
  const c = clientCases(scale).find((x) => x.id === id)
  if (c === undefined) throw new Error(`no client case ${id}`)
  const dir = freshDir(outDir, c.id)
  const server = c.server === "smtp-sink"
    ? await startSmtpSink(pinning.load)
    : await nodeServer(programs.server).start({ mode: "sink", core: pinning.load })
  try {
    const { child } = await startProgram(programs.client, { core: pinning.measured, nodeArgs: profileArgs(dir) })
    const request = (messages: number, size = c.request.size): SendRequest & { readonly type: string } => ({
      type: "send",
      ...c.request,
      port: server.port,
      messages,
      size
    })
    let window: readonly [number, number]
    let answer: SendAnswer
    try {
      await child.request(request(c.request.size > MiB ? 1 : 1000, Math.min(c.request.size, 8 * MiB)), 600_000) // warm-up
      const reply = await child.request(request(c.request.messages), 600_000)
      answer = reply as unknown as SendAnswer
      window = [answer.startedUs, Number(reply.clockUs)]
    } finally {
      await child.stop()
    }
    if (answer.accepted !== c.request.messages) throw new Error(`${answer.accepted} of ${c.request.messages} messages accepted`)
    const { breakdown, file } = readProfile(root, dir, window)
    const rate = c.unit === "msg/s" ? c.request.messages / answer.seconds : c.request.messages * c.request.size / 1e6 / answer.seconds
    const title = `Profile of effect-smtp's client (${programs.client.form}), ${c.label} (${c.request.messages} msgs; under the profiler ` +
      `${Math.round(rate).toLocaleString("en-US")} ${c.unit}, ${Math.round(answer.cpuSeconds / c.request.messages * 1e6).toLocaleString("en-US")} µs CPU/msg)`
    return render(title, breakdown, file)
  } finally {
    await server.stop()
  }
}

/** Profiles one case; `programs` are effect-smtp's server and client in the form to profile. */
export const profileCase = (root: string, outDir: string, programs: {
  readonly server: Program
  readonly client: Program
  /** The server that client cases send to when it is effect-smtp's (always from dist). */
  readonly ownServer: Program
}, scale: number, id: string): Promise<string> =>
  id.startsWith("client-")
    ? profileClient(root, outDir, { client: programs.client, server: programs.ownServer }, scale, id)
    : profileServer(root, outDir, programs.server, scale, id)
