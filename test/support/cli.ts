/**
 * Runs the real `effect-smtp` command line as a child process, the way users and scripts do,
 * and reads its JSON events from stdout.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"

const bin = path.resolve(import.meta.dirname, "../../bin/effect-smtp")

export interface Running {
  readonly child: ChildProcess
  /** Every event so far, in order. */
  readonly events: Array<Record<string, unknown>>
  readonly stderr: () => string
  /** Resolves with the first event (past or future) that satisfies `predicate`. */
  readonly waitFor: (predicate: (e: Record<string, unknown>) => boolean, timeoutMs?: number) => Promise<Record<string, unknown>>
  /** Sends a signal and resolves with the exit code. */
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | null>
  readonly exited: Promise<number | null>
}

export interface StartOptions {
  readonly cwd?: string
  /** Runs the command under `ulimit -f` (KiB): larger writes fail with EFBIG, as on a full disk. */
  readonly fileSizeLimitKiB?: number
  /** Runs the command as this user (the test must run as root). */
  readonly user?: { readonly uid: number; readonly gid: number }
}

export const start = (args: ReadonlyArray<string>, options: StartOptions = {}): Running => {
  const [command, argv] = options.fileSizeLimitKiB === undefined
    ? [bin, args]
    : ["bash", ["-c", `ulimit -f ${options.fileSizeLimitKiB} && exec "$0" "$@"`, bin, ...args]]
  const child = spawn(command, argv, {
    cwd: options.cwd,
    stdio: ["ignore", "pipe", "pipe"],
    ...(options.user === undefined ? {} : { uid: options.user.uid, gid: options.user.gid })
  })
  const events: Array<Record<string, unknown>> = []
  const waiters: Array<() => void> = []
  let out = ""
  let err = ""
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk
    let nl: number
    while ((nl = out.indexOf("\n")) >= 0) {
      const line = out.slice(0, nl)
      out = out.slice(nl + 1)
      if (line.trim() !== "") events.push(JSON.parse(line) as Record<string, unknown>)
    }
    for (const w of waiters.splice(0)) w()
  })
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk
  })
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => {
    for (const w of waiters.splice(0)) w()
    resolve(code)
  }))
  const waitFor = (predicate: (e: Record<string, unknown>) => boolean, timeoutMs = 15_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no matching event within ${timeoutMs} ms; stderr: ${err}; events: ${JSON.stringify(events)}`)),
        timeoutMs
      )
      const check = () => {
        const found = events.find(predicate)
        if (found !== undefined) {
          clearTimeout(timer)
          resolve(found)
        } else if (child.exitCode !== null) {
          clearTimeout(timer)
          reject(new Error(`exited with ${child.exitCode}; stderr: ${err}`))
        } else {
          waiters.push(check)
        }
      }
      check()
    })
  return {
    child,
    events,
    stderr: () => err,
    waitFor,
    stop: (signal = "SIGTERM") => {
      if (child.exitCode === null) child.kill(signal)
      return exited
    },
    exited
  }
}

/** Runs the command to completion with `input` on stdin. */
export const run = (
  args: ReadonlyArray<string>,
  input?: string | Uint8Array
): Promise<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }> =>
  new Promise((resolve) => {
    const child = spawn(bin, args, { stdio: ["pipe", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c))
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(input ?? "")
  })
