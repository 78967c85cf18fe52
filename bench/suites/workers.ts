/**
 * `effect-smtp serve --workers 2` against `serve` (one process), as shipped (dist/effect-smtp.mjs):
 * smtp-source with case b's load (32 sessions over kept connections, 1 KiB). Neither side is
 * pinned: the workers are there to use both cores, and smtp-source runs on the same two.
 * Messages go into a Maildir on tmpfs (/dev/shm), so the disk is not what is measured; the
 * count and bytes of the files written are checked after every run. CPU time and peak RSS are
 * summed over the supervisor and its workers.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { awaitGreeting, freePort, spawnTracked, withDeadline } from "../lib/proc.ts"
import { format, type Row } from "../lib/report.ts"
import { type Load, runCase, type ServerSpec, sourceFlags, summarize, type Target } from "../lib/servers.ts"

const scaled = (n: number, scale: number) => Math.max(1, Math.round(n * scale))

export const workersCaseIds = ["workers"] as const

const log = (s: string) => process.stderr.write(`${s}\n`)
const pct = (x: number) => `${Math.round(x * 100)}`

/** The pids of a process's children (Linux: /proc/PID/task/TID/children). */
const childrenOf = (pid: number): Array<number> => {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim()
      return text === "" ? [] : text.split(/\s+/).map(Number)
    })
  } catch {
    return []
  }
}

/** Messages in a Maildir's new/ and their bytes. */
const maildirTotals = (maildir: string) => {
  const dir = path.join(maildir, "new")
  if (!existsSync(dir)) return { messages: 0, bytes: 0 }
  const names = readdirSync(dir)
  let bytes = 0
  for (const n of names) bytes += statSync(path.join(dir, n)).size
  return { messages: names.length, bytes }
}

/** `serve --workers N` from dist/ on a free port, its Maildir on tmpfs. */
const serveSpec = (root: string, workers: number): ServerSpec => ({
  name: workers === 1 ? "serve (1 process)" : `serve --workers ${workers}`,
  start: async (): Promise<Target> => {
    const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir()
    const dir = mkdtempSync(path.join(base, "esmtp-bench-"))
    const maildir = path.join(dir, "md")
    const port = await freePort()
    const proc = spawnTracked([
      process.execPath,
      path.join(root, "dist", "effect-smtp.mjs"),
      "serve",
      "--workers",
      String(workers),
      "--listen",
      `127.0.0.1:${port}`,
      "--maildir",
      maildir,
      "--events",
      "none",
      "--max-message-bytes",
      String(2 * 1024 * 1024 * 1024 - 1)
    ], { stdio: ["ignore", "ignore", "inherit"] })
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()))
    const pid = proc.pid!
    const pids = () => workers === 1 ? [pid] : [pid, ...childrenOf(pid)]
    // Up when every worker is there and one answers (they bind before the supervisor counts them).
    await withDeadline("serve start", 60_000, (async () => {
      while (pids().length < (workers === 1 ? 1 : workers + 1)) await new Promise((r) => setTimeout(r, 50))
      await awaitGreeting(port, 30_000)
    })())
    return {
      port,
      pid,
      pids,
      received: () => Promise.resolve({ ...maildirTotals(maildir), clockUs: NaN }),
      collect: () => Promise.resolve(),
      stop: async () => {
        proc.kill("SIGTERM")
        const timer = setTimeout(() => proc.kill("SIGKILL"), 45_000)
        await exited
        clearTimeout(timer)
        rmSync(dir, { recursive: true, force: true })
      }
    }
  }
})

export const workersSuite = async (
  root: string,
  options: { readonly reps: number; readonly scale: number; readonly ids: (id: string) => boolean }
): Promise<{ readonly rows: Array<Row>; readonly raw: Array<unknown> }> => {
  const rows: Array<Row> = []
  const raw: Array<unknown> = []
  if (!options.ids("workers")) return { rows, raw }
  const load: Load = { keepConnection: true, sessions: 32, messages: scaled(40000, options.scale), size: 1024 }
  const flags = sourceFlags(load).join(" ")
  log(`workers: smtp-source ${flags} against serve --workers 2 and serve…`)
  const results = await runCase([serveSpec(root, 2), serveSpec(root, 1)], { mode: "sink", load, reps: options.reps, timeoutMs: 600_000, pinLoad: false })
  raw.push({ case: "workers", flags: sourceFlags(load), results })
  const [two, one] = results.map((r) => summarize(r, "msg/s"))
  const base = { suite: "workers", id: "workers", case: `serve --workers 2 vs 1, 32 sessions, 1 KiB, Maildir on tmpfs (\`${flags}\`)` } as const
  rows.push(
    {
      ...base,
      metric: "throughput",
      unit: "msg/s",
      ours: two!.rate,
      peerName: "serve, 1 process",
      peer: one!.rate,
      note: `unpinned, 2 cores shared with smtp-source (busy ${pct(two!.loadShare)} / ${pct(one!.loadShare)} %); server processes busy ${pct(two!.cpuShare)} / ${pct(one!.cpuShare)} % of one core`
    },
    {
      ...base,
      metric: "server CPU per msg",
      unit: "cpu",
      ours: two!.cpuPerMessage,
      peerName: "serve, 1 process",
      peer: one!.cpuPerMessage,
      note: `all processes (supervisor and workers): ${format(two!.cpuPerMessage, "cpu")} against ${format(one!.cpuPerMessage, "cpu")}`
    },
    { ...base, metric: "peak RSS", unit: "bytes", ours: two!.peakRss, peerName: "serve, 1 process", peer: one!.peakRss, note: "summed over the processes" }
  )
  return { rows, raw }
}
