/**
 * Processes for the benchmarks: spawning (pinned to a core when `taskset` exists), talking to
 * a child over Node's IPC channel, and reading a process's CPU time, memory and bytes read
 * from /proc. Every wait has a deadline, so a stuck peer ends the run instead of hanging it,
 * and every child is killed when the runner ends, however it ends.
 */
import { type ChildProcess, execFileSync, spawn, type SpawnOptions } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { availableParallelism } from "node:os"

const hasTaskset = existsSync("/usr/bin/taskset") || existsSync("/bin/taskset")
const cores = availableParallelism()

/** Where each side runs: the process under test on the last core, its peer on the first. */
export const pinning = {
  enabled: hasTaskset && cores >= 2,
  measured: cores - 1,
  load: 0
} as const

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
  } catch {
    return 100
  }
})()

// --- every child, killed when the runner ends ---

const live = new Set<ChildProcess>()

const killAll = () => {
  for (const child of live) child.kill("SIGKILL")
  live.clear()
}
process.on("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    killAll()
    process.exit(128 + (signal === "SIGINT" ? 2 : signal === "SIGTERM" ? 15 : 1))
  })
}

/** `spawn`, with the child registered so that it is killed if the runner ends first. */
export const spawnTracked = (argv: ReadonlyArray<string>, options: SpawnOptions): ChildProcess => {
  const child = spawn(argv[0]!, argv.slice(1), options)
  live.add(child)
  child.once("exit", () => live.delete(child))
  return child
}

/** The command line that runs `argv` on one core (unchanged when pinning is off). */
export const pinned = (core: number, argv: ReadonlyArray<string>): Array<string> =>
  pinning.enabled ? ["taskset", "-c", String(core), ...argv] : [...argv]

// --- /proc ---

const statFields = (pid: number | "self") => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after the command name (which may contain spaces) start with the state, field 3.
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")
}

/** User + system CPU time of a live process, in seconds (clock-tick resolution). */
export const cpuSeconds = (pid: number): number => {
  const fields = statFields(pid)
  return (Number(fields[11]) + Number(fields[12])) / clockTicks
}

/**
 * CPU time (user + system, seconds) of this process's children that have ended and been
 * waited for: the delta over a run of a load generator is that generator's CPU time.
 */
export const endedChildrenCpuSeconds = (): number => {
  const fields = statFields("self")
  return (Number(fields[13]) + Number(fields[14])) / clockTicks
}

const statusKiB = (pid: number, key: "VmRSS" | "VmHWM"): number => {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return m === null ? NaN : Number(m[1])
}

/** Resident memory now, in bytes. */
export const rssBytes = (pid: number): number => statusKiB(pid, "VmRSS") * 1024

/** The highest resident memory since the last {@link resetPeakRss} (or since start), in bytes. */
export const peakRssBytes = (pid: number): number => statusKiB(pid, "VmHWM") * 1024

/** Restarts the peak-RSS high-water mark at the current RSS (Linux clear_refs "5"). */
export const resetPeakRss = (pid: number): void => {
  writeFileSync(`/proc/${pid}/clear_refs`, "5")
}

/** Bytes a process has read through read(2) and friends (sockets included): `rchar` of /proc/<pid>/io. */
export const bytesRead = (pid: number): number => {
  const m = /^rchar:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"))
  if (m === null) throw new Error(`no rchar in /proc/${pid}/io`)
  return Number(m[1])
}

/** This process's soft limit on open files (children inherit it). */
export const openFileLimit = (): number => {
  const m = /^Max open files\s+(\S+)/m.exec(readFileSync("/proc/self/limits", "utf8"))
  return m === null || m[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(m[1])
}

// --- deadlines and children ---

export const withDeadline = <A>(what: string, ms: number, promise: Promise<A>): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
    promise.then(
      (a) => {
        clearTimeout(timer)
        resolve(a)
      },
      (e: unknown) => {
        clearTimeout(timer)
        reject(e)
      }
    )
  })

export interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly wallSeconds: number
  readonly output: string
}

/** Runs a command to its end (killed after `timeoutMs`, which fails), timing it from spawn to exit. */
export const runToEnd = (argv: ReadonlyArray<string>, timeoutMs: number): Promise<Finished> =>
  new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawnTracked(argv, { stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout!.on("data", (b: Buffer) => (output += b.toString()))
    child.stderr!.on("data", (b: Buffer) => (output += b.toString()))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill("SIGKILL")
    }, timeoutMs)
    child.once("error", (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.once("close", (code, signal) => {
      clearTimeout(timer)
      if (timedOut) reject(new Error(`${argv.join(" ")}: not done within ${timeoutMs} ms`))
      else resolve({ code, signal, wallSeconds: (performance.now() - started) / 1000, output })
    })
  })

/** Messages a benchmark child sends: it is ready (with its port), or answers a request. */
export type ChildMessage = { readonly type: string } & Readonly<Record<string, unknown>>

/**
 * A Node child that speaks the benchmark's IPC protocol (see `child.ts`): it says `ready`,
 * answers requests with a message of the same `type`, and exits on `exit`.
 */
export class NodeChild {
  readonly process: ChildProcess
  readonly pid: number
  private readonly inbox: Array<ChildMessage> = []
  private waiting: ((m: ChildMessage) => void) | undefined
  private readonly exited: Promise<number | null>

  private constructor(child: ChildProcess) {
    this.process = child
    this.pid = child.pid!
    child.on("message", (m: ChildMessage) => {
      const w = this.waiting
      if (w !== undefined) {
        this.waiting = undefined
        w(m)
      } else {
        this.inbox.push(m)
      }
    })
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)))
  }

  /** Starts `node [nodeArgs] script [args]` on `core` and waits for its `ready` message. */
  static async start(options: {
    readonly script: string
    readonly args?: ReadonlyArray<string>
    readonly nodeArgs?: ReadonlyArray<string>
    readonly core: number
  }): Promise<{ readonly child: NodeChild; readonly ready: ChildMessage }> {
    const argv = pinned(options.core, [process.execPath, ...(options.nodeArgs ?? []), options.script, ...(options.args ?? [])])
    const child = new NodeChild(spawnTracked(argv, { stdio: ["ignore", "inherit", "inherit", "ipc"] }))
    try {
      const ready = await withDeadline(`${options.script} start`, 30_000, child.next())
      if (ready.type !== "ready") throw new Error(`${options.script}: expected ready, got ${JSON.stringify(ready)}`)
      return { child, ready }
    } catch (e) {
      child.process.kill("SIGKILL")
      throw e
    }
  }

  private next(): Promise<ChildMessage> {
    const queued = this.inbox.shift()
    if (queued !== undefined) return Promise.resolve(queued)
    return new Promise((resolve, reject) => {
      this.waiting = resolve
      void this.exited.then((code) => reject(new Error(`benchmark child exited (code ${code})`)))
    })
  }

  /** Sends a request and waits for the answer of the same type. */
  async request(message: ChildMessage, timeoutMs = 60_000): Promise<ChildMessage> {
    this.process.send(message)
    const answer = await withDeadline(`child request ${message.type}`, timeoutMs, this.next())
    if (answer.type === "error") throw new Error(`benchmark child failed: ${String(answer.message)}`)
    if (answer.type !== message.type) throw new Error(`expected ${message.type}, got ${JSON.stringify(answer)}`)
    return answer
  }

  /** Asks the child to exit (so a CPU profile gets written); kills it if it does not within 10 s. */
  async stop(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return
    if (this.process.connected) this.process.send({ type: "exit" })
    const timer = setTimeout(() => this.process.kill("SIGKILL"), 10_000)
    await this.exited
    clearTimeout(timer)
  }
}

/** A TCP port free right now on 127.0.0.1 (for programs that cannot bind port 0 and say which). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const address = s.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      s.close(() => resolve(port))
    })
  })

/** Resolves once something on `port` answers with an SMTP greeting; fails after `timeoutMs`. */
export const awaitGreeting = async (port: number, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  for (let delay = 10;; delay = Math.min(delay * 2, 200)) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: "127.0.0.1", port })
      socket.setTimeout(2_000, () => {
        socket.destroy()
        resolve(false)
      })
      socket.once("data", (b: Buffer) => {
        socket.end("QUIT\r\n")
        resolve(b.toString("latin1").startsWith("220"))
      })
      socket.once("error", () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing answers on port ${port}`)
    await new Promise((r) => setTimeout(r, delay))
  }
}
