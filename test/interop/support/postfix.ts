/**
 * A private Postfix: its own config, queue and data directories in the test's scratch
 * directory, loopback only, logging to a file there (`maillog_file`; /dev/stdout cannot be
 * used, as Node's pipes are sockets, which cannot be opened by path), run in the foreground
 * (`postfix start-fg`) and stopped with `postfix stop` when the scope closes. Nothing of the
 * system's Postfix configuration is read; only the files the package installs are used
 * (`postfix-files` and the scripts). Postfix runs its daemons as the `postfix` user, which
 * the package creates, so the instance is started as root.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Scratch } from "./files.ts"
import { daemon, describeRun, ProcessError, run } from "./process.ts"

export interface PostfixOptions {
  /** main.cf settings besides the base ones (which they override). */
  readonly main?: Readonly<Record<string, string>> | undefined
  /** master.cf lines besides the base services. */
  readonly services?: ReadonlyArray<string> | undefined
  /** Lookup tables written into the config directory, for `texthash:${configDir}/NAME`. */
  readonly tables?: Readonly<Record<string, ReadonlyArray<readonly [string, string]>>> | undefined
}

/** One delivery attempt for one recipient, as Postfix logged it. */
interface Delivery {
  readonly queueId: string
  readonly recipient: string
  readonly relay: string
  readonly dsn: string
  readonly status: "sent" | "deferred" | "bounced" | string
  /** The text in parentheses: the remote reply and the command it answered, or what happened. */
  readonly text: string
}

/** A message in the queue, from `postqueue -j`. */
interface Queued {
  readonly queue_name: string
  readonly queue_id: string
  readonly sender: string
  readonly recipients: ReadonlyArray<{ readonly address: string; readonly delay_reason?: string }>
}

export interface Postfix {
  readonly configDir: string
  readonly queueDir: string
  /** Everything it logged so far. */
  readonly log: () => string
  /** Waits until the log satisfies `find` (default 15 s). */
  readonly logged: <A>(find: (log: string) => A | undefined) => Effect.Effect<A, ProcessError>
  /** Submits a message with Postfix's sendmail (`-i`: a lone "." is just a line). */
  readonly sendmail: (message: string | Uint8Array, from: string, to: ReadonlyArray<string>) => Effect.Effect<void, ProcessError>
  /** The queue ID of the message with this Message-ID (cleanup logs it as the message arrives). */
  readonly queueId: (messageId: string) => Effect.Effect<string, ProcessError>
  /** Waits for the next logged attempt for `recipient` of `queueId` after `after` earlier ones. */
  readonly delivery: (queueId: string, recipient: string, after?: number) => Effect.Effect<Delivery, ProcessError>
  /** Waits until Postfix is done with the message: "removed" from the queue. */
  readonly removed: (queueId: string) => Effect.Effect<void, ProcessError>
  /** The queue now. */
  readonly queue: Effect.Effect<ReadonlyArray<Queued>, ProcessError>
  /** Waits (polling the queue, 15 s at most) until the message is in the named queue ("deferred"…). */
  readonly queued: (queueId: string, queueName: string) => Effect.Effect<Queued, ProcessError>
  /** Asks for every queued message to be tried again now (`postqueue -f`). */
  readonly flush: Effect.Effect<void, ProcessError>
}

/**
 * Re-reads `file` whenever its directory changes (and every 250 ms, should an event be missed)
 * until `find` returns something.
 */
const watchText = <A>(file: string, find: (text: string) => A | undefined): Effect.Effect<A> =>
  Effect.callback<A>((resume) => {
    let done = false
    const check = () => {
      if (done || !fs.existsSync(file)) return
      const found = find(fs.readFileSync(file, "utf8"))
      if (found === undefined) return
      done = true
      stop()
      resume(Effect.succeed(found))
    }
    const watcher = fs.watch(path.dirname(file), check)
    const timer = setInterval(check, 250)
    const stop = () => {
      watcher.close()
      clearInterval(timer)
    }
    check()
    return Effect.sync(stop)
  })

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

const baseServices = [
  // service type private unpriv chroot wakeup maxproc command
  "pickup    unix  n - n 60   1 pickup",
  "cleanup   unix  n - n -    0 cleanup",
  "qmgr      unix  n - n 300  1 qmgr",
  "tlsmgr    unix  - - n 1000? 1 tlsmgr",
  "rewrite   unix  - - n -    - trivial-rewrite",
  "bounce    unix  - - n -    0 bounce",
  "defer     unix  - - n -    0 bounce",
  "trace     unix  - - n -    0 bounce",
  "verify    unix  - - n -    1 verify",
  "flush     unix  n - n 1000? 0 flush",
  "proxymap  unix  - - n -    - proxymap",
  "showq     unix  n - n -    - showq",
  "error     unix  - - n -    - error",
  "retry     unix  - - n -    - error",
  "discard   unix  - - n -    - discard",
  "smtp      unix  - - n -    - smtp",
  "lmtp      unix  - - n -    - lmtp",
  "virtual   unix  - n n -    - virtual",
  "anvil     unix  - - n -    1 anvil",
  "scache    unix  - - n -    1 scache",
  "postlog   unix-dgram n - n - 1 postlogd"
]

/** Starts Postfix and waits until its master daemon runs. */
export const start = (files: Scratch, options: PostfixOptions = {}): Effect.Effect<Postfix, ProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    if (process.getuid?.() !== 0) {
      return yield* new ProcessError({ message: "a private Postfix needs root (its daemons run as the postfix user)", stdout: "", stderr: "" })
    }
    // The daemons, as postfix, must reach their directories inside the scratch directory.
    fs.chmodSync(files.dir, 0o755)
    const configDir = files.path("postfix")
    const queueDir = files.path("postfix-queue")
    const dataDir = files.path("postfix-data")
    for (const dir of [configDir, queueDir, dataDir]) fs.mkdirSync(dir, { mode: 0o755 })
    const postfixUser = yield* run("id", ["-u", "postfix"])
    if (postfixUser.code !== 0) {
      return yield* new ProcessError({ message: "no postfix user: is the postfix package installed?", ...postfixUser })
    }
    fs.chownSync(dataDir, Number(postfixUser.stdout.trim()), 0)

    const logFile = files.path("postfix.log")
    const log = () => fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8") : ""
    const main: Record<string, string> = {
      compatibility_level: "3.6",
      queue_directory: queueDir,
      data_directory: dataDir,
      mail_owner: "postfix",
      setgid_group: "postdrop",
      inet_interfaces: "loopback-only",
      inet_protocols: "ipv4",
      myhostname: "postfix.test",
      mydomain: "postfix.test",
      mydestination: "",
      alias_maps: "",
      alias_database: "",
      local_recipient_maps: "",
      local_transport: "error:5.1.1 no local delivery here",
      biff: "no",
      maillog_file: logFile,
      maillog_file_prefixes: files.dir,
      smtp_host_lookup: "native",
      smtp_tls_loglevel: "1",
      smtpd_tls_loglevel: "1",
      ...options.main
    }
    fs.writeFileSync(`${configDir}/main.cf`, Object.entries(main).map(([k, v]) => `${k} = ${v}\n`).join(""))
    fs.writeFileSync(`${configDir}/master.cf`, [...baseServices, ...(options.services ?? [])].join("\n") + "\n")
    for (const [name, rows] of Object.entries(options.tables ?? {})) {
      fs.writeFileSync(`${configDir}/${name}`, rows.map(([k, v]) => `${k} ${v}\n`).join(""))
    }

    const postfix = (args: ReadonlyArray<string>) => run("/usr/sbin/postfix", ["-c", configDir, ...args])
    const master = yield* daemon("/usr/sbin/postfix", ["-c", configDir, "start-fg"])
    yield* Effect.addFinalizer(() => Effect.ignore(postfix(["stop"])))
    const failure = (message: string) => new ProcessError({ message, stdout: log().slice(-4000), stderr: master.output().stderr })
    /** Waits until the log satisfies `find`; fails if Postfix stops, or after 15 seconds. */
    const logged = <A>(find: (log: string) => A | undefined): Effect.Effect<A, ProcessError> =>
      Effect.raceFirst(
        watchText(logFile, find),
        Effect.flatMap(Effect.exit(master.exited(Duration.infinity)), () => Effect.fail(failure("Postfix stopped")))
      ).pipe(Effect.timeoutOrElse({
        duration: Duration.seconds(15),
        orElse: () => Effect.fail(failure("Postfix did not log what was awaited in time"))
      }))
    yield* logged((text) => /postfix\/master\[\d+\]: daemon started/.test(text) ? true : undefined)
    const checked = (command: string, args: ReadonlyArray<string>, input?: string | Uint8Array) =>
      Effect.flatMap(run(command, args, { input }), (r) =>
        r.code === 0 ? Effect.succeed(r.stdout) : Effect.fail(
          new ProcessError({ message: `${command} ${args.join(" ")}: ${describeRun(r)}`, stdout: r.stdout, stderr: r.stderr })
        ))
    const deliveries = (log: string, queueId: string, recipient: string): Array<Delivery> =>
      [...log.matchAll(new RegExp(
        `${queueId}: to=<${escape(recipient)}>,(?: orig_to=<[^>]*>,)? relay=([^,]+), .*?dsn=([\\d.]+), status=(\\w+) \\((.*)\\)$`,
        "gm"
      ))].map((m) => ({ queueId, recipient, relay: m[1]!, dsn: m[2]!, status: m[3]!, text: m[4]! }))

    const queue = Effect.map(
      checked("/usr/sbin/postqueue", ["-c", configDir, "-j"]),
      (out) => out.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Queued)
    )
    return {
      configDir,
      queueDir,
      log,
      logged,
      sendmail: (message, from, to) =>
        Effect.asVoid(checked("/usr/sbin/sendmail", ["-C", configDir, "-i", "-f", from, "--", ...to], message)),
      queueId: (messageId) =>
        logged((log) => new RegExp(`: ([0-9A-F]+): message-id=<${escape(messageId)}>$`, "m").exec(log)?.[1]),
      delivery: (queueId, recipient, after = 0) => logged((log) => deliveries(log, queueId, recipient)[after]),
      removed: (queueId) => logged((log) => new RegExp(`: ${queueId}: removed$`, "m").test(log) ? true : undefined),
      queue,
      queued: (queueId, queueName) =>
        queue.pipe(
          Effect.map((q) => q.find((m) => m.queue_id === queueId && m.queue_name === queueName)),
          Effect.repeat({ until: (m) => m !== undefined, schedule: Schedule.spaced(Duration.millis(50)) }),
          Effect.timeoutOrElse({
            duration: Duration.seconds(15),
            orElse: () => Effect.fail(failure(`${queueId} did not reach the ${queueName} queue`))
          }),
          Effect.map((m) => m!)
        ),
      flush: Effect.asVoid(checked("/usr/sbin/postqueue", ["-c", configDir, "-f"]))
    } satisfies Postfix
  })
