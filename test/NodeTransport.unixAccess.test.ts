/**
 * Unix socket listeners with a mode, owner and group (`ListenOptions.unix`): checked over the
 * wire with clients that run as other users (a child process that drops from root to them).
 * Changing a socket's owner needs root, so this file runs as root, as the interop suite does.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { execFile, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as NodeTransport from "../src/NodeTransport.ts"
import type { TransportError, UnixSocketAccess } from "../src/Transport.ts"
import { readLine } from "./support/observe.ts"

const account = (db: "passwd" | "group", name: string) => Number(execFileSync("getent", [db, name], { encoding: "utf8" }).split(":")[2])
const nobody = { uid: account("passwd", "nobody"), gid: account("group", "nogroup") }
const daemon = { uid: account("passwd", "daemon"), gid: account("group", "daemon") }

/** A directory everybody may enter (the socket's own mode is what decides), removed afterwards. */
const socketDir = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "esmtp-ux-"))
    fs.chmodSync(dir, 0o755)
    return dir
  }),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

// The child starts as root, drops to the user, connects, sends one line and reports.
const clientScript = `
const net = require("node:net")
const [path, uid, gid] = process.argv.slice(1)
process.setgroups([]); process.setgid(Number(gid)); process.setuid(Number(uid))
const s = net.connect({ path })
s.on("connect", () => s.end("hello from " + process.getuid() + "\\r\\n", () => {
  console.log("connected")
  s.destroy() // the data is with the kernel; no need to wait for the server's end
}))
s.on("error", (e) => console.log(e.code))
`

/** Connects as `user`: "connected", or the error code (EACCES). */
const connectAs = (user: { readonly uid: number; readonly gid: number }, socket: string) =>
  Effect.callback<string>((resume) => {
    const child = execFile(process.execPath, ["-e", clientScript, socket, String(user.uid), String(user.gid)], (error, stdout) =>
      resume(error === null ? Effect.succeed(stdout.trim()) : Effect.die(error)))
    return Effect.sync(() => child.kill())
  })


const listenAt = (socket: string, unix: UnixSocketAccess) => NodeTransport.listen({ endpoint: { _tag: "Unix", path: socket }, unix })

const messageOf = <A>(exit: Exit.Exit<A, TransportError>): string => {
  if (Exit.isSuccess(exit)) return "succeeded"
  for (const r of exit.cause.reasons) if (r._tag === "Fail") return `${r.error.reason}: ${r.error.message}`
  return "died"
}

describe("NodeTransport Unix socket access", () => {
  it.live("runs as root (needed to give a socket another owner)", () =>
    Effect.sync(() => assert.strictEqual(process.getuid?.(), 0, "run the test suite as root")))

  it.live("owner by name, mode 0600: that user connects and is served, another user is refused", () =>
    Effect.gen(function*() {
      const socket = path.join(yield* socketDir, "lmtp")
      const listener = yield* listenAt(socket, { owner: "nobody", mode: 0o600 })
      const stat = fs.lstatSync(socket)
      assert.isTrue(stat.isSocket())
      assert.strictEqual(stat.mode & 0o7777, 0o600)
      assert.strictEqual(stat.uid, nobody.uid)
      assert.strictEqual(stat.gid, 0) // the group is left alone

      assert.strictEqual(yield* connectAs(nobody, socket), "connected")
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      assert.strictEqual(yield* readLine(server), `hello from ${nobody.uid}\r\n`)
      assert.strictEqual(yield* connectAs(daemon, socket), "EACCES")
      // Nothing but the socket in the directory: the staging directory is gone.
      assert.deepStrictEqual(fs.readdirSync(path.dirname(socket)), ["lmtp"])
    }))

  it.live("group by name: the mode defaults to 0660, members connect, others are refused", () =>
    Effect.gen(function*() {
      const socket = path.join(yield* socketDir, "lmtp")
      const listener = yield* listenAt(socket, { group: "nogroup" })
      const stat = fs.lstatSync(socket)
      assert.strictEqual(stat.mode & 0o7777, 0o660)
      assert.deepStrictEqual([stat.uid, stat.gid], [0, nobody.gid])
      assert.strictEqual(yield* connectAs(nobody, socket), "connected")
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      assert.strictEqual(yield* readLine(server), `hello from ${nobody.uid}\r\n`)
      assert.strictEqual(yield* connectAs(daemon, socket), "EACCES")
    }))

  it.live("numbers, as numbers or digits, are ids; 0666 lets anybody in", () =>
    Effect.gen(function*() {
      const dir = yield* socketDir
      yield* listenAt(path.join(dir, "a"), { owner: daemon.uid, group: String(daemon.gid), mode: 0o666 })
      const a = fs.lstatSync(path.join(dir, "a"))
      assert.deepStrictEqual([a.uid, a.gid, a.mode & 0o7777], [daemon.uid, daemon.gid, 0o666])
      assert.strictEqual(yield* connectAs(nobody, path.join(dir, "a")), "connected")
      // No owner or group: the process's own, with the mode given.
      yield* listenAt(path.join(dir, "b"), { mode: 0o640 })
      const b = fs.lstatSync(path.join(dir, "b"))
      assert.deepStrictEqual([b.uid, b.gid, b.mode & 0o7777], [0, 0, 0o640])
    }))

  it.live("unknown names and bad modes are Listen errors that say so; nothing is left behind", () =>
    Effect.gen(function*() {
      const dir = yield* socketDir
      const socket = path.join(dir, "s")
      const cases: ReadonlyArray<readonly [UnixSocketAccess, string]> = [
        [{ owner: "no-such-user-here" }, `unknown user "no-such-user-here"`],
        [{ group: "no-such-group-here" }, `unknown group "no-such-group-here"`],
        [{ owner: "bad:name" }, `invalid user name "bad:name"`],
        [{ mode: 0o10000 }, "invalid socket mode 0o10000: expected 0o0 to 0o7777"],
        [{ mode: 1.5 }, "invalid socket mode 1.5: expected 0o0 to 0o7777"]
      ]
      for (const [access, message] of cases) {
        const exit = yield* Effect.exit(Effect.scoped(listenAt(socket, access)))
        assert.strictEqual(messageOf(exit), `Listen: cannot listen on unix:${socket}: ${message}`)
      }
      assert.deepStrictEqual(fs.readdirSync(dir), [])
    }))

  it.live("a live socket in the way is refused and untouched; a stale one is replaced; the file goes with the scope", () =>
    Effect.gen(function*() {
      const dir = yield* socketDir
      const socket = path.join(dir, "s")
      const first = yield* Scope.make()
      yield* listenAt(socket, { owner: "nobody" }).pipe(Scope.provide(first))

      const inTheWay = yield* Effect.exit(Effect.scoped(listenAt(socket, { owner: "daemon" })))
      assert.strictEqual(messageOf(inTheWay), `Listen: cannot listen on unix:${socket}: address already in use: ${socket}`)
      assert.strictEqual(fs.lstatSync(socket).uid, nobody.uid)
      assert.strictEqual(yield* connectAs(nobody, socket), "connected")
      assert.deepStrictEqual(fs.readdirSync(dir), ["s"])

      // A stale socket: a hard link to the live one outlives its server.
      fs.linkSync(socket, path.join(dir, "stale"))
      yield* Scope.close(first, Exit.void)
      assert.isFalse(fs.existsSync(socket))
      const stale = path.join(dir, "stale")
      assert.isTrue(fs.lstatSync(stale).isSocket())
      const listener = yield* listenAt(stale, { owner: "daemon", mode: 0o600 })
      assert.strictEqual(fs.lstatSync(stale).uid, daemon.uid)
      assert.strictEqual(yield* connectAs(daemon, stale), "connected")
      const server = yield* Effect.acquireRelease(listener.accept, (t) => t.close)
      assert.strictEqual(yield* readLine(server), `hello from ${daemon.uid}\r\n`)

      // A file that is not a socket is never replaced.
      fs.writeFileSync(path.join(dir, "plain"), "keep me")
      const plain = yield* Effect.exit(Effect.scoped(listenAt(path.join(dir, "plain"), { mode: 0o600 })))
      assert.match(messageOf(plain), /^Listen: .*address already in use/)
      assert.strictEqual(fs.readFileSync(path.join(dir, "plain"), "utf8"), "keep me")
    }))
})
