/**
 * Worker processes (./worker.ts) started from a test: each on the test's own Node, ready once
 * it prints READY, killable with SIGKILL, stopped when the scope closes.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import * as path from "node:path"
import { ProcessError } from "../../interop/support/process.ts"

const script = path.resolve(import.meta.dirname, "worker.ts")

export interface WorkerProcess {
  readonly name: string
  /** SIGKILL, as a crash or the OOM killer would; waits for the process to be gone. */
  readonly kill: Effect.Effect<void>
  readonly output: () => string
}

export const start = (
  name: string,
  env: Readonly<Record<string, string>>
): Effect.Effect<WorkerProcess, ProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    const ready = yield* Deferred.make<void, ProcessError>()
    const exited = yield* Deferred.make<void>()
    let output = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(process.execPath, ["--disable-warning=ExperimentalWarning", script], {
          env: { ...process.env, ...env, NAME: name },
          stdio: ["ignore", "pipe", "pipe"]
        })
        const fail = (message: string) =>
          Deferred.doneUnsafe(ready, Effect.fail(new ProcessError({ message: `worker ${name}: ${message}`, stdout: output, stderr: "" })))
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
          output += chunk
          if (output.includes("READY\n")) Deferred.doneUnsafe(ready, Effect.void)
        })
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
          output += chunk
        })
        child.once("error", (e) => fail(e.message))
        child.once("exit", (code, signal) => {
          fail(`exited (${code ?? signal}) before it was ready:\n${output}`)
          Deferred.doneUnsafe(exited, Effect.void)
        })
        return child
      }),
      (child) =>
        Effect.gen(function*() {
          if (child.exitCode !== null || child.signalCode !== null) return
          child.kill("SIGTERM")
          const stopped = yield* Deferred.await(exited).pipe(Effect.timeoutOption("3 seconds"))
          if (stopped._tag === "None") child.kill("SIGKILL")
        })
    )
    yield* Deferred.await(ready).pipe(
      Effect.timeoutOrElse({
        duration: "30 seconds",
        orElse: () => Effect.fail(new ProcessError({ message: `worker ${name}: not ready in 30 s`, stdout: output, stderr: "" }))
      })
    )
    return {
      name,
      kill: Effect.suspend(() => {
        child.kill("SIGKILL")
        return Deferred.await(exited)
      }),
      output: () => output
    }
  })
