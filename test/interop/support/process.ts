/**
 * Runs a real program as a child process from inside an Effect test: asynchronously (the
 * server under test lives in the same process and must keep serving), with a deadline, and
 * killed if the test is interrupted or times out.
 */
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import * as fs from "node:fs"

export interface RunOptions {
  /** Written to the program's standard input, which is then closed. */
  readonly input?: string | Uint8Array | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly cwd?: string | undefined
  /** Run as this user and group (the test runs as root; some servers refuse to). */
  readonly uid?: number | undefined
  readonly gid?: number | undefined
  /** Default 20 seconds: every peer here finishes in well under one on an idle machine. */
  readonly timeout?: Duration.Input | undefined
}

export interface RunResult {
  /** The exit code, or `null` when a signal ended the program. */
  readonly code: number | null
  readonly signal: string | null
  readonly stdout: string
  readonly stderr: string
}

/** The program could not be started, or did not finish in time. */
export class ProcessError extends Data.TaggedError("ProcessError")<{
  readonly message: string
  readonly stdout: string
  readonly stderr: string
}> {}

/** Runs `command args…` and waits for it to exit (whatever its exit code); each run of the Effect runs it anew. */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: RunOptions = {}
): Effect.Effect<RunResult, ProcessError> => Effect.suspend(() => runOnce(command, args, options))

const runOnce = (
  command: string,
  args: ReadonlyArray<string>,
  options: RunOptions
): Effect.Effect<RunResult, ProcessError> => {
  const out: Array<Buffer> = []
  const err: Array<Buffer> = []
  const text = (chunks: Array<Buffer>) => Buffer.concat(chunks).toString("utf8")
  const name = [command, ...args].join(" ")
  return Effect.callback<RunResult, ProcessError>((resume) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
      ...(options.uid === undefined ? {} : { uid: options.uid }),
      ...(options.gid === undefined ? {} : { gid: options.gid })
    })
    child.stdout.on("data", (b: Buffer) => out.push(b))
    child.stderr.on("data", (b: Buffer) => err.push(b))
    // A program that exits before reading all its input makes the pipe fail: not our concern.
    child.stdin.on("error", () => {})
    child.once("error", (cause) =>
      resume(Effect.fail(new ProcessError({ message: `${name}: ${cause.message}`, stdout: text(out), stderr: text(err) }))))
    child.once("close", (code, signal) =>
      resume(Effect.succeed({ code, signal, stdout: text(out), stderr: text(err) })))
    child.stdin.end(options.input ?? "")
    return Effect.sync(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    })
  }).pipe(
    Effect.timeoutOrElse({
      duration: options.timeout ?? Duration.seconds(20),
      orElse: () =>
        Effect.fail(new ProcessError({ message: `${name}: timed out`, stdout: text(out), stderr: text(err) }))
    })
  )
}

/** A short account of a run, for assertion messages. */
export const describeRun = (r: RunResult): string =>
  `exit ${r.code ?? r.signal}\n--- stdout ---\n${r.stdout.slice(-4000)}\n--- stderr ---\n${r.stderr.slice(-4000)}`

/** A long-running program (a server peer) started for the rest of the test. */
export interface Daemon {
  /** Waits until it listens on the Unix socket `path`; fails if it exits first or takes over 10 s. */
  readonly listening: (path: string) => Effect.Effect<void, ProcessError>
  /** Waits for the program to exit by itself; fails if it does not within `timeout`. */
  readonly exited: (timeout?: Duration.Input) => Effect.Effect<RunResult, ProcessError>
  /** What it printed so far. */
  readonly output: () => { readonly stdout: string; readonly stderr: string }
}

/**
 * Starts a program in the background. When the scope closes, a program still running gets
 * SIGTERM (or `stopSignal`), and SIGKILL if it has not exited two seconds later.
 */
export const daemon = (
  command: string,
  args: ReadonlyArray<string>,
  options: Omit<RunOptions, "input" | "timeout"> & {
    /** The signal that asks it to stop. Default SIGTERM. */
    readonly stopSignal?: NodeJS.Signals | undefined
  } = {}
): Effect.Effect<Daemon, ProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    const text = (chunks: Array<Buffer>) => Buffer.concat(chunks).toString("utf8")
    const name = [command, ...args].join(" ")
    const exit = yield* Deferred.make<RunResult, ProcessError>()
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(command, args, {
          cwd: options.cwd,
          env: { ...process.env, ...options.env },
          stdio: ["ignore", "pipe", "pipe"],
          ...(options.uid === undefined ? {} : { uid: options.uid }),
          ...(options.gid === undefined ? {} : { gid: options.gid })
        })
        child.stdout.on("data", (b: Buffer) => out.push(b))
        child.stderr.on("data", (b: Buffer) => err.push(b))
        child.once("error", (cause) =>
          Deferred.doneUnsafe(
            exit,
            Effect.fail(new ProcessError({ message: `${name}: ${cause.message}`, stdout: text(out), stderr: text(err) }))
          ))
        child.once("close", (code, signal) =>
          Deferred.doneUnsafe(exit, Effect.succeed({ code, signal, stdout: text(out), stderr: text(err) })))
        return child
      }),
      (child) =>
        Effect.gen(function*() {
          if (child.exitCode !== null || child.signalCode !== null) return
          child.kill(options.stopSignal ?? "SIGTERM")
          const stopped = yield* Deferred.await(exit).pipe(Effect.ignore, Effect.timeoutOption(Duration.seconds(2)))
          if (stopped._tag === "None") child.kill("SIGKILL")
        })
    )
    const failure = (message: string) => new ProcessError({ message: `${name}: ${message}`, stdout: text(out), stderr: text(err) })
    return {
      listening: (path) =>
        Effect.raceFirst(
          waitForSocket(path).pipe(Effect.mapError(() => failure(`nothing listens on ${path}`))),
          Effect.flatMap(Effect.exit(Deferred.await(exit)), () => Effect.fail(failure("exited before listening")))
        ),
      exited: (timeout = Duration.seconds(20)) =>
        Deferred.await(exit).pipe(Effect.timeoutOrElse({
          duration: timeout,
          orElse: () => Effect.fail(failure("still running"))
        })),
      output: () => ({ stdout: text(out), stderr: text(err) })
    }
  })

/**
 * Waits until a Unix socket at `path` is listening, for at most 10 seconds. It reads the
 * kernel's table (/proc/net/unix) rather than connecting, so the server sees no extra session.
 */
const waitForSocket = (path: string) =>
  Effect.suspend(() => isListening(path) ? Effect.void : Effect.fail("not yet")).pipe(
    Effect.retry(Schedule.spaced(Duration.millis(20))),
    Effect.timeout(Duration.seconds(10))
  )

// A line of /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; the flag
// __SO_ACCEPTCON (0x10000) marks a listening socket.
const isListening = (path: string): boolean =>
  fs.readFileSync("/proc/net/unix", "utf8").split("\n").some((line) => {
    const fields = line.trim().split(/\s+/)
    return fields[7] === path && (Number.parseInt(fields[3] ?? "0", 16) & 0x10000) !== 0
  })
