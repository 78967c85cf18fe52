/**
 * `effect-smtp serve --workers N` as users run it: worker processes share a TCP port (the
 * kernel spreads connections) and a Unix socket (the supervisor hands connections out); a
 * worker that dies is started again, a crash loop more and more slowly; SIGTERM brings every
 * worker down with 421 to its clients and exit code 0. Also `--proxy-protocol` and
 * `--xclient-trusted` through the command line.
 */
import { afterAll, afterEach, assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as ProxyProtocol from "../../src/ProxyProtocol.ts"
import type { Endpoint } from "../../src/Transport.ts"
import * as Cli from "../support/cli.ts"
import * as Wire from "../support/wire.ts"

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "effect-smtp-workers-"))
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }))

const running: Array<Cli.Running> = []
afterEach(async () => {
  // SIGTERM first: SIGKILL would leave the workers to notice their supervisor is gone.
  await Promise.all(running.splice(0).map((r) => r.stop("SIGTERM")))
})

const serve = (args: ReadonlyArray<string>) => {
  const maildir = path.join(fs.mkdtempSync(path.join(tmp, "run-")), "md")
  const r = Cli.start(["serve", "--maildir", maildir, ...args])
  running.push(r)
  return { r, maildir }
}

const endpointOf = (address: string): Endpoint => address.startsWith("unix:")
  ? { _tag: "Unix", path: address.slice(5) }
  : { _tag: "Tcp", host: address.slice(0, address.lastIndexOf(":")), port: Number(address.slice(address.lastIndexOf(":") + 1)) }

const listening = async (r: Cli.Running, n: number) => {
  await r.waitFor(() => r.events.filter((e) => e.event === "listening").length === n)
  return r.events.filter((e) => e.event === "listening").map((e) => e.address as string)
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const send = (p: Wire.Peer, to: string) =>
  Effect.gen(function*() {
    for (const [line, code] of [["EHLO client.test", 250], ["MAIL FROM:<a@example.com>", 250], [`RCPT TO:<${to}>`, 250], ["DATA", 354]] as const) {
      const reply = yield* p.command(line)
      assert.strictEqual(reply.code, code, `${line}: ${reply.code} ${reply.text}`)
    }
    assert.strictEqual((yield* p.command("Subject: hi\r\n\r\nbody\r\n.")).code, 250)
  })

/** The pid in a Maildir file name (TIME.MmicrosPpid.host). */
const pidOf = (id: unknown) => Number(/P(\d+)Q/.exec(String(id))?.[1])

describe("effect-smtp serve --workers", () => {
  it("two workers on one port and one Unix socket; SIGTERM: 421 to every client, exit 0", async () => {
    const socket = path.join(tmp, `w-${process.pid}.sock`)
    const { r } = serve(["--workers", "2", "--listen", "127.0.0.1:0", "--listen", `unix:${socket}`])
    const [tcp, unix] = await listening(r, 2)
    assert.strictEqual(unix, `unix:${socket}`)
    const workers = r.events.filter((e) => e.event === "worker" && e.status === "ready").map((e) => e.pid as number)
    assert.strictEqual(new Set(workers).size, 2)
    assert.isFalse(workers.includes(r.child.pid!))

    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      // 16 connections from distinct ports: the odds that the kernel gives all to one worker are 2^-15.
      const peers: Array<Wire.Peer> = []
      for (let i = 0; i < 16; i++) {
        const p = yield* Wire.connect({ endpoint: endpointOf(tcp!) })
        assert.strictEqual((yield* p.reply).code, 220)
        yield* send(p, `tcp${i}@example.com`)
        peers.push(p)
      }
      const local = yield* Wire.connect({ endpoint: endpointOf(unix!) })
      assert.strictEqual((yield* local.reply).code, 220)
      yield* send(local, "unix@example.com")
      peers.push(local)
      yield* Effect.promise(() => r.waitFor(() => r.events.filter((e) => e.event === "received").length === 17))
      const received = r.events.filter((e) => e.event === "received")
      const servedBy = new Set(received.map((e) => pidOf(e.id)))
      assert.deepStrictEqual([...servedBy].sort(), [...workers].sort(), "both workers served connections")
      assert.include(workers, pidOf(received.find((e) => (e.to as Array<string>)[0] === "unix@example.com")!.id))

      // Every client, idle between transactions, is told 421 by its worker.
      const stopped = r.stop("SIGTERM")
      for (const p of peers) {
        const reply = yield* p.reply
        assert.strictEqual(`${reply.code} ${reply.enhancedCode?.join(".")}`, "421 4.3.2")
      }
      assert.strictEqual(yield* Effect.promise(() => stopped), 0)
    })).pipe(Effect.provide(NodeTransport.layer)))
    for (const pid of workers) assert.isFalse(alive(pid), `worker ${pid} is gone`)
    assert.isFalse(fs.existsSync(socket))
  })

  it("--max-connections-per-ip holds over all workers, not per worker", async () => {
    const { r } = serve(["--workers", "2", "--listen", "127.0.0.1:0", "--max-connections-per-ip", "2"])
    const [tcp] = await listening(r, 1)
    const endpoint = endpointOf(tcp!)
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const held: Array<Wire.Peer> = []
      for (let i = 0; i < 2; i++) {
        const p = yield* Wire.connect({ endpoint })
        assert.strictEqual((yield* p.reply).code, 220)
        held.push(p)
      }
      // Each worker could take 2 by itself: counted per worker, about half of these would be greeted.
      for (let i = 0; i < 8; i++) {
        const refused = yield* Effect.scoped(Effect.gen(function*() {
          const p = yield* Wire.connect({ endpoint })
          const reply = yield* p.reply
          return { reply, closed: reply.code === 421 ? yield* p.closed : false }
        }))
        assert.strictEqual(`${refused.reply.code} ${refused.reply.enhancedCode?.join(".")}`, "421 4.7.0", `connection ${i + 3}`)
        assert.include(refused.reply.text, "Too many connections from your address")
        assert.isTrue(refused.closed)
      }
      // One ends: its place is free again, on whichever worker. Its release reaches the supervisor
      // on another channel than the next admission, so a 421 may come first: try a few times.
      assert.strictEqual((yield* held[0]!.command("QUIT")).code, 221)
      assert.isTrue(yield* held[0]!.closed)
      let greeted: number | undefined
      for (let attempt = 0; attempt < 50 && greeted !== 220; attempt++) {
        if (attempt > 0) yield* Effect.sleep("20 millis")
        greeted = yield* Effect.scoped(Effect.flatMap(Wire.connect({ endpoint }), (p) => Effect.map(p.reply, (reply) => reply.code)))
      }
      assert.strictEqual(greeted, 220)
    })).pipe(Effect.provide(NodeTransport.layer)))
  })

  it("a worker that dies is started again, and a crash loop slows down", async () => {
    const { maildir, r } = serve(["--workers", "2", "--listen", "127.0.0.1:0", "--events", "json"])
    await listening(r, 1)
    const first = r.events.find((e) => e.event === "worker" && e.worker === 2)!.pid as number
    process.kill(first, "SIGKILL")
    const exited = await r.waitFor((e) => e.event === "worker" && e.status === "exited" && e.pid === first)
    assert.strictEqual(exited.signal, "SIGKILL")
    assert.strictEqual(exited.restartInMs, 100)
    const second = (await r.waitFor((e) => e.event === "worker" && e.status === "ready" && e.worker === 2 && e.pid !== first)).pid as number

    // A worker that cannot start (its Maildir is now a file) exits at once, again and again.
    fs.renameSync(maildir, `${maildir}.away`)
    fs.writeFileSync(maildir, "not a directory")
    process.kill(second, "SIGKILL")
    const crashed = await r.waitFor((e) => e.event === "worker" && e.status === "exited" && e.code === 1)
    const delays = r.events.filter((e) => e.event === "worker" && e.status === "exited").map((e) => e.restartInMs)
    // 100 (the first death), then doubling with each quick death (the rest in restarts.test.ts).
    assert.deepStrictEqual(delays.slice(0, 3), [100, 200, 400])
    assert.strictEqual(crashed.restartInMs, 400)
    fs.rmSync(maildir)
    fs.renameSync(`${maildir}.away`, maildir)
    await r.waitFor((e) => e.event === "worker" && e.status === "ready" && e.worker === 2 && e.pid !== second, 20_000)
    // SIGINT (a Ctrl-C) shuts down as SIGTERM does.
    const pids = r.events.filter((e) => e.event === "worker" && e.status === "ready").map((e) => e.pid as number)
    assert.strictEqual(await r.stop("SIGINT"), 0)
    for (const pid of pids) assert.isFalse(alive(pid), `worker ${pid} is gone`)
  })

  it("a worker that cannot start stops the supervisor with its exit code", async () => {
    // A plain listener holds the port: SO_REUSEPORT cannot share it.
    const holder = net.createServer()
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve))
    try {
      const port = (holder.address() as net.AddressInfo).port
      const { r } = serve(["--workers", "2", "--listen", `127.0.0.1:${port}`])
      assert.strictEqual(await r.exited, 1)
      assert.include(r.stderr(), "worker 1 exited during start-up")
      assert.include(r.stderr(), `127.0.0.1:${port}`)
    } finally {
      holder.close()
    }
  })

  it("usage errors: a bad --workers, --http with workers, PROXY flags without each other, bad networks", async () => {
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
      [["--workers", "0"], "invalid --workers 0"],
      [["--workers", "2", "--http", "127.0.0.1:0"], "--http serves one process's inbox"],
      [["--proxy-protocol"], "--proxy-protocol and --proxy-trusted go together"],
      [["--proxy-trusted", "10.0.0.0/8"], "--proxy-protocol and --proxy-trusted go together"],
      [["--proxy-protocol", "--proxy-trusted", "10.0.0.0/99"], "invalid --proxy-trusted"],
      [["--xclient-trusted", "nowhere"], "invalid --xclient-trusted"]
    ]
    const results = await Promise.all(
      cases.map(([args]) => Cli.run(["serve", "--maildir", path.join(tmp, "never"), "--listen", "127.0.0.1:0", ...args]))
    )
    cases.forEach(([args, message], i) => {
      assert.strictEqual(results[i]!.code, 2, `${args.join(" ")}: ${results[i]!.stderr}`)
      assert.include(results[i]!.stderr, message)
    })
  })

  it("--proxy-protocol and --xclient-trusted: the client address in events is the one the proxy or XCLIENT gave", async () => {
    const { r } = serve([
      "--workers",
      "2",
      "--listen",
      "127.0.0.1:0",
      "--proxy-protocol",
      "--proxy-trusted",
      "127.0.0.1",
      "--xclient-trusted",
      "198.51.100.0/24",
      "--trace"
    ])
    const [address] = await listening(r, 1)
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const p = yield* Wire.connect({ endpoint: endpointOf(address!) })
      yield* p.write(ProxyProtocol.format({
        version: 2,
        source: { _tag: "Tcp", host: "198.51.100.7", port: 4711 },
        destination: { _tag: "Tcp", host: "203.0.113.25", port: 25 }
      }))
      assert.strictEqual((yield* p.reply).code, 220)
      yield* send(p, "proxied@example.com")
      // The client behind the proxy is in 198.51.100.0/24: XCLIENT is offered to it.
      assert.strictEqual((yield* p.command("XCLIENT ADDR=192.0.2.55 PORT=1025")).code, 220)
      yield* send(p, "xclient@example.com")
    })).pipe(Effect.provide(NodeTransport.layer)))
    await r.waitFor(() => r.events.filter((e) => e.event === "received").length === 2)
    const remotes = r.events.filter((e) => e.event === "received").map((e) => e.remote)
    assert.deepStrictEqual(remotes, ["198.51.100.7:4711", "192.0.2.55:1025"])
    // --trace reaches the workers: their commands on the supervisor's stderr.
    assert.include(r.stderr(), "XCLIENT ADDR=192.0.2.55 PORT=1025")
    // Not from a trusted proxy: closed without a greeting.
    const direct = await new Promise<string>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port: Number(address!.split(":")[1]), localAddress: "127.0.0.2" })
      let got = ""
      s.on("data", (c) => (got += c.toString()))
      s.on("close", () => resolve(got))
      s.on("error", () => {})
    })
    assert.strictEqual(direct, "")
  })
})
