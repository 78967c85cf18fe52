/**
 * `effect-smtp serve` when storing fails: the Maildir gone, not writable, a file where one of its
 * folders belongs, a full disk (a file size limit on the process, EFBIG, stands in for ENOSPC).
 * Each time the client gets 451 4.3.0, no file is left in tmp/ or new/, and the server goes on
 * serving, on the same connection; never a defect answered with 421.
 */
import { afterAll, afterEach, assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as Cli from "../support/cli.ts"
import * as Wire from "../support/wire.ts"

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "effect-smtp-storage-"))
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }))

const running: Array<Cli.Running> = []
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop("SIGKILL")))
})

// As root (CI), permissions would not stop the server: it runs as nobody, and the Maildir is theirs.
const asRoot = process.getuid?.() === 0
const user = asRoot ? { uid: 65534, gid: 65534 } : undefined
const own = (p: string) => {
  if (user !== undefined) fs.chownSync(p, user.uid, user.gid)
}
const folder = (p: string) => {
  fs.mkdirSync(p)
  own(p)
}
const files = (dir: string) => fs.existsSync(dir) && fs.statSync(dir).isDirectory() ? fs.readdirSync(dir) : []

describe("effect-smtp serve: storage failures", () => {
  it("451 4.3.0 for every failure to store, no file left, and the server goes on", async () => {
    own(tmp)
    const maildir = path.join(tmp, "maildir")
    const r = Cli.start(["serve", "--maildir", maildir, "--listen", "127.0.0.1:0"], { fileSizeLimitKiB: 64, ...(user === undefined ? {} : { user }) })
    running.push(r)
    const listening = await r.waitFor((e) => e.event === "listening")
    const address = listening.address as string
    const port = Number(address.slice(address.lastIndexOf(":") + 1))

    const sent: Array<string> = []
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const p = yield* Wire.connect({ endpoint: { _tag: "Tcp", host: "127.0.0.1", port } })
      assert.strictEqual((yield* p.reply).code, 220)
      assert.strictEqual((yield* p.command("EHLO client.test")).code, 250)
      /** One message on the connection; its final reply as "451 4.3.0". */
      const send = (body: string) =>
        Effect.gen(function*() {
          assert.strictEqual((yield* p.command("MAIL FROM:<a@example.com>")).code, 250)
          assert.strictEqual((yield* p.command("RCPT TO:<b@example.com>")).code, 250)
          assert.strictEqual((yield* p.command("DATA")).code, 354)
          const r = yield* p.command(body + ".")
          const shown = `${r.code} ${r.enhancedCode?.join(".")}`
          sent.push(shown)
          return shown
        })
      const small = "Subject: ok\r\n\r\nstored\r\n"
      assert.strictEqual(yield* send(small), "250 2.0.0")

      const cases: ReadonlyArray<readonly [string, () => void, () => void]> = [
        ["a full disk", () => {}, () => {}],
        ["tmp/ not writable", () => fs.chmodSync(path.join(maildir, "tmp"), 0o500), () => fs.chmodSync(path.join(maildir, "tmp"), 0o700)],
        ["a file where tmp/ belongs", () => {
          fs.rmSync(path.join(maildir, "tmp"), { recursive: true })
          fs.writeFileSync(path.join(maildir, "tmp"), "not a folder")
        }, () => {
          fs.rmSync(path.join(maildir, "tmp"))
          folder(path.join(maildir, "tmp"))
        }],
        ["a file where new/ belongs", () => {
          fs.renameSync(path.join(maildir, "new"), path.join(tmp, "kept-new"))
          fs.writeFileSync(path.join(maildir, "new"), "not a folder")
        }, () => {
          fs.rmSync(path.join(maildir, "new"))
          fs.renameSync(path.join(tmp, "kept-new"), path.join(maildir, "new"))
        }],
        ["the Maildir gone", () => fs.renameSync(maildir, path.join(tmp, "kept-maildir")), () => fs.renameSync(path.join(tmp, "kept-maildir"), maildir)]
      ]
      for (const [what, breakIt, mend] of cases) {
        breakIt()
        // Over the 64 KiB file size limit for the full disk; small otherwise.
        const body = what === "a full disk" ? `Subject: big\r\n\r\n${"x".repeat(998)}\r\n`.repeat(100) : small
        assert.strictEqual(yield* send(body), "451 4.3.0", what)
        mend()
        assert.deepStrictEqual(files(path.join(maildir, "tmp")), [], `${what}: nothing left in tmp/`)
        assert.strictEqual(files(path.join(maildir, "new")).length, 1, `${what}: nothing added to new/`)
        assert.strictEqual((yield* p.command("NOOP")).code, 250, `${what}: the connection goes on`)
      }
      assert.strictEqual(yield* send(small), "250 2.0.0")
      assert.strictEqual((yield* p.command("QUIT")).code, 221)
    })).pipe(Effect.provide(NodeTransport.layer)))

    assert.deepStrictEqual(sent, ["250 2.0.0", "451 4.3.0", "451 4.3.0", "451 4.3.0", "451 4.3.0", "451 4.3.0", "250 2.0.0"])
    assert.strictEqual(files(path.join(maildir, "new")).length, 2)
    assert.strictEqual(r.events.filter((e) => e.event === "received").length, 2)
    assert.notMatch(r.stderr(), /defect|421/)
    assert.strictEqual(r.child.exitCode, null, "still running")
  })
})
