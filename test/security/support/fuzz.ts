/**
 * Property runs for the security tests, with fast-check driving an Effect per case.
 *
 * Under `npm test` every property has a fixed seed (derived from its name) and a small number
 * of runs, so the suite is fast and deterministic. `scripts/fuzz.sh` sets:
 * - `FUZZ_SEED`: the base seed (each property derives its own from it and its name);
 * - `FUZZ_SCALE`: how many times more runs each property makes.
 * A failure names the seed, so `FUZZ_SEED=<seed> FUZZ_SCALE=<scale> npx vitest run test/security`
 * replays it.
 */
import * as Effect from "effect/Effect"
import * as fc from "fast-check"

const DEFAULT_SEED = 0x5eed_2025

const envNumber = (name: string): number | undefined => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return undefined
  const n = Number(raw)
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, got ${JSON.stringify(raw)}`)
  return n
}

const baseSeed: number = envNumber("FUZZ_SEED") ?? DEFAULT_SEED
const scale: number = Math.max(envNumber("FUZZ_SCALE") ?? 1, 1)

/** FNV-1a: a stable 32-bit hash of a property's name. */
const hash = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return h | 0
}

/** How many runs a property makes: `runs` under `npm test`, scaled up under the fuzz script. */
const runsOf = (runs: number): number => Math.ceil(runs * scale)

/** A test's time limit, scaled like its runs. */
export const timeoutOf = (ms: number): number => Math.ceil(ms * scale)

export interface PropertyOptions {
  /** Runs under `npm test`; multiplied by FUZZ_SCALE. */
  readonly runs: number
  /** Shrink a failing case to a smaller one (off for slow, real-time properties). Default true. */
  readonly shrink?: boolean
}

/**
 * Checks `check` for values of `arbitrary`. Each case runs as its own Effect, in the calling
 * test's context (TestClock included), so the property behaves like the test around it.
 * A failing case fails the test with the counterexample and the seed to replay it.
 */
export const property = <A>(
  name: string,
  arbitrary: fc.Arbitrary<A>,
  check: (value: A) => Effect.Effect<void, unknown>,
  options: PropertyOptions
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const context = yield* Effect.context<never>()
    const run = Effect.runPromiseWith(context)
    const seed = (baseSeed ^ hash(name)) | 0
    const details = yield* Effect.promise(() =>
      fc.check(fc.asyncProperty(arbitrary, (value) => run(check(value))), {
        seed,
        numRuns: runsOf(options.runs),
        endOnFailure: options.shrink === false
      })
    )
    if (details.failed) {
      const shown = fc.stringify(details.counterexample).slice(0, 4000)
      const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)
      return yield* Effect.die(
        new Error(
          `property "${name}" failed after ${details.numRuns} runs ` +
            `(replay: FUZZ_SEED=${baseSeed} FUZZ_SCALE=${scale}; fast-check seed ${details.seed}, path ${details.counterexamplePath})\n` +
            `counterexample: ${shown}\n${error}`
        )
      )
    }
  })
