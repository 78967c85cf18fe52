/**
 * The mode, owner and group a Unix socket listener's file gets (`ListenOptions.unix`), with user
 * and group names resolved to ids the way the system resolves them: through NSS (`getent`), or
 * from /etc/passwd and /etc/group where there is no `getent`.
 */
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import type { UnixSocketAccess } from "../../Transport.ts"

/** What `fs.chmod` and `fs.chown` get; -1 leaves the owner or group as they are. */
export interface ResolvedAccess {
  readonly mode: number
  readonly uid: number
  readonly gid: number
}

type Database = "passwd" | "group"

const describe = { passwd: "user", group: "group" } as const

// The third field of a passwd or group entry is the uid or gid.
const idOf = (entry: string, name: string): number | undefined => {
  const fields = entry.split(":")
  if (fields[0] !== name) return undefined
  const id = Number(fields[2])
  return Number.isSafeInteger(id) && id >= 0 ? id : undefined
}

const fromFile = (db: Database, name: string): number | undefined => {
  for (const line of fs.readFileSync(`/etc/${db}`, "utf8").split("\n")) {
    const id = idOf(line, name)
    if (id !== undefined) return id
  }
  return undefined
}

const lookup = (db: Database, name: string): Effect.Effect<number | undefined, Error> =>
  Effect.callback((resume) => {
    // node:child_process is loaded here, not at import: only listeners with an owner need it.
    const child = process.getBuiltinModule("node:child_process").execFile("getent", [db, "--", name], { timeout: 10_000 }, (error, stdout) => {
      if (error === null) return resume(Effect.succeed(idOf(stdout.split("\n")[0] ?? "", name)))
      // getent exits with 2 when the name is unknown.
      if (error.code === 2) return resume(Effect.succeed(undefined))
      if (error.code === "ENOENT") {
        return resume(Effect.try({ try: () => fromFile(db, name), catch: (cause) => cause as Error }))
      }
      resume(Effect.fail(new Error(`cannot look up ${describe[db]} "${name}": ${error.message}`)))
    })
    return Effect.sync(() => child.kill())
  })

const resolveId = (db: Database, value: string | number | undefined): Effect.Effect<number, Error> => {
  if (value === undefined) return Effect.succeed(-1)
  const what = describe[db]
  if (typeof value === "number" || /^\d+$/.test(value)) {
    const id = Number(value)
    return Number.isSafeInteger(id) && id >= 0 && id < 2 ** 32
      ? Effect.succeed(id)
      : Effect.fail(new Error(`invalid ${what} id ${value}`))
  }
  if (value === "" || /[:\0\n]/.test(value)) return Effect.fail(new Error(`invalid ${what} name "${value}"`))
  return Effect.flatMap(lookup(db, value), (id) =>
    id === undefined ? Effect.fail(new Error(`unknown ${what} "${value}"`)) : Effect.succeed(id))
}

/** Checks the mode and resolves the names; fails with a message fit for a Listen error. */
export const resolve = (access: UnixSocketAccess): Effect.Effect<ResolvedAccess, Error> =>
  Effect.gen(function*() {
    const mode = access.mode ?? (access.group === undefined ? 0o600 : 0o660)
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      const shown = Number.isInteger(mode) ? `0o${mode.toString(8)}` : String(mode)
      return yield* Effect.fail(new Error(`invalid socket mode ${shown}: expected 0o0 to 0o7777`))
    }
    const uid = yield* resolveId("passwd", access.owner)
    const gid = yield* resolveId("group", access.group)
    return { mode, uid, gid }
  })
