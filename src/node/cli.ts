/**
 * The `effect-smtp` command line: `serve` (a dev mail server storing into a Maildir) and
 * `send` (send one message). Its flags, events and exit codes are a contract; see README.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as CliError from "effect/cli/CliError"
import * as CliOutput from "effect/cli/CliOutput"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as fs from "node:fs"
import * as DevServer from "./DevServer.ts"
import * as ServerConfig from "../internal/server/Config.ts"
import * as IpNetworks from "../internal/transport/IpNetworks.ts"
import * as Workers from "./Workers.ts"
import type * as Inbox from "./inbox/Inbox.ts"
import * as Durations from "./Durations.ts"
import * as SelfSigned from "./SelfSigned.ts"
import * as SmtpServer from "../SmtpServer.ts"
import type { Endpoint } from "../Transport.ts"
import { UsageError, writeStderr, writeStdout } from "./output.ts"
import { sendCommand } from "./send.ts"

const repeated = (flag: Flag.Flag<string>) => Flag.atLeast(flag, 0)
const flag = (name: string, description: string) =>
  Flag.Boolean(name).pipe(Flag.withDescription(description), Flag.withDefault(false))

const serveFlags = {
  listen: repeated(Flag.String("listen").pipe(
    Flag.withDescription("HOST:PORT or unix:PATH to listen on (repeatable; port 0 picks a free port). Default 127.0.0.1:2525")
  )),
  lmtp: flag("lmtp", "Speak LMTP instead of SMTP on every listener"),
  tlsListen: repeated(Flag.String("tls-listen").pipe(
    Flag.withDescription("HOST:PORT or unix:PATH for implicit TLS (repeatable)")
  )),
  unixMode: Flag.optional(Flag.String("unix-mode").pipe(
    Flag.withDescription("Octal mode of every unix: listener's socket, e.g. 0660 (default 0660 with --unix-group, else 0600)")
  )),
  unixOwner: Flag.optional(Flag.String("unix-owner").pipe(
    Flag.withDescription("User (name or uid) owning every unix: listener's socket; needs root")
  )),
  unixGroup: Flag.optional(Flag.String("unix-group").pipe(
    Flag.withDescription("Group (name or gid) of every unix: listener's socket")
  )),
  tlsCert: Flag.optional(Flag.String("tls-cert").pipe(Flag.withDescription("PEM certificate chain (enables STARTTLS)"))),
  tlsKey: Flag.optional(Flag.String("tls-key").pipe(Flag.withDescription("PEM private key for --tls-cert"))),
  tlsSelfSigned: flag("tls-self-signed", "Make a throwaway self-signed localhost certificate at start (enables STARTTLS)"),
  auth: repeated(Flag.String("auth").pipe(Flag.withDescription("USER:PASSWORD accepted by AUTH (repeatable; enables AUTH)"))),
  requireAuth: flag("require-auth", "Refuse MAIL until AUTH succeeded"),
  allowInsecureAuth: flag("allow-insecure-auth", "Offer password mechanisms without TLS"),
  domain: Flag.String("domain").pipe(Flag.withDescription("Server name in replies"), Flag.withDefault("localhost")),
  maildir: Flag.String("maildir").pipe(Flag.withDescription("Where messages are stored"), Flag.withDefault("./maildir")),
  maxMessageBytes: Flag.optional(Flag.Int("max-message-bytes").pipe(Flag.withDescription("Default 33554432 (32 MiB)"))),
  maxRecipients: Flag.optional(Flag.Int("max-recipients").pipe(Flag.withDescription("Default 1000"))),
  maxLineLength: Flag.optional(Flag.Int("max-line-length").pipe(Flag.withDescription("Default 2000"))),
  maxBodyLineLength: Flag.optional(Flag.Int("max-body-line-length").pipe(
    Flag.withDescription("Longest line of a text message in bytes; 0 for no limit. Default 1048576 (1 MiB)")
  )),
  maxConnections: Flag.optional(Flag.Int("max-connections").pipe(Flag.withDescription("Default 1000 (per worker process)"))),
  maxConnectionsPerIp: Flag.optional(Flag.Int("max-connections-per-ip").pipe(
    Flag.withDescription("Default 50 (over all worker processes)")
  )),
  workers: Flag.Int("workers").pipe(
    Flag.withDescription("Server processes sharing the listeners (SO_REUSEPORT; Unix sockets through the supervisor). Default 1"),
    Flag.withDefault(1)
  ),
  proxyProtocol: flag("proxy-protocol", "Every connection starts with a PROXY protocol header (v1 or v2) from a --proxy-trusted proxy"),
  proxyTrusted: repeated(Flag.String("proxy-trusted").pipe(
    Flag.withDescription("Address or CIDR network of a proxy that may send PROXY headers (repeatable; needed by --proxy-protocol)")
  )),
  proxyTimeout: Flag.optional(Flag.String("proxy-timeout").pipe(Flag.withDescription("Time for a PROXY header, e.g. 3s. Default 5s"))),
  xclientTrusted: repeated(Flag.String("xclient-trusted").pipe(
    Flag.withDescription("Address or CIDR network of a client offered XCLIENT (repeatable; enables XCLIENT)")
  )),
  readTimeout: Flag.optional(Flag.String("read-timeout").pipe(
    Flag.withDescription("Time for a command or a stalled message body, e.g. 30s. Default 5m")
  )),
  writeTimeout: Flag.optional(Flag.String("write-timeout").pipe(Flag.withDescription("Default 1m"))),
  greetingDelay: Flag.optional(Flag.String("greeting-delay").pipe(
    Flag.withDescription("Wait this long before the greeting; a client that talks first gets 554 5.5.0 and is closed, e.g. 2s. Default 0")
  )),
  smtputf8: flag("smtputf8", "Enable SMTPUTF8 (off by default)"),
  binarymime: flag("binarymime", "Enable BINARYMIME (off by default)"),
  chunking: flag("chunking", "Enable CHUNKING/BDAT (on by default; kept for clarity)"),
  requiretls: flag("requiretls", "Enable REQUIRETLS, offered over TLS (off by default)"),
  dsn: flag("dsn", "Enable DSN (off by default)"),
  bareLf: Flag.Literals("bare-lf", ["reject", "normalize", "allow"]).pipe(
    Flag.withDescription("Bare CR/LF in DATA: reject (550, default), normalize to CRLF, or allow"),
    Flag.withDefault("reject" as const)
  ),
  fault: repeated(Flag.String("fault").pipe(
    Flag.withDescription("Inject a failure: STAGE:REGEX=CODE [X.Y.Z] [TEXT], STAGE mail|rcpt|data (repeatable)")
  )),
  http: Flag.optional(Flag.String("http").pipe(
    Flag.withDescription("Serve the web inbox and its JSON API on HOST:PORT (loopback unless --http-auth is given), e.g. 127.0.0.1:8025")
  )),
  httpAuth: Flag.optional(Flag.String("http-auth").pipe(
    Flag.withDescription("USER:PASSWORD required by the web inbox (HTTP basic authentication)")
  )),
  trace: flag("trace", "Log every command and reply on stderr (AUTH data redacted, messages as byte counts)"),
  events: Flag.Literals("events", ["json", "none"]).pipe(
    Flag.withDescription("JSON events on stdout (default) or none"),
    Flag.withDefault("json" as const)
  )
}

type ServeInput = Command.Command.Config.Infer<typeof serveFlags>

const parseAll = <A>(items: ReadonlyArray<string>, f: (s: string) => A): Effect.Effect<Array<A>, UsageError> =>
  Effect.try({ try: () => items.map(f), catch: (e) => new UsageError({ message: (e as Error).message }) })

const usage = (message: string) => new UsageError({ message })

/** `--unix-mode`, `--unix-owner`, `--unix-group`: for every `unix:` listener (and only with one). */
const unixAccess = (input: ServeInput, endpoints: ReadonlyArray<Endpoint>) =>
  Effect.gen(function*() {
    const mode = Option.getOrUndefined(input.unixMode)
    const owner = Option.getOrUndefined(input.unixOwner)
    const group = Option.getOrUndefined(input.unixGroup)
    if (mode === undefined && owner === undefined && group === undefined) return undefined
    if (!endpoints.some((e) => e._tag === "Unix")) {
      return yield* usage("--unix-mode, --unix-owner and --unix-group need a unix:PATH listener")
    }
    if (mode !== undefined && !/^0?[0-7]{3}$/.test(mode)) {
      return yield* usage(`invalid --unix-mode "${mode}": expected an octal mode such as 0660`)
    }
    return { mode: mode === undefined ? undefined : Number.parseInt(mode, 8), owner, group }
  })

const serve = (input: ServeInput) =>
  Effect.gen(function*() {
    const listen = yield* parseAll(input.listen.length > 0 ? input.listen : ["127.0.0.1:2525"], SmtpServer.parseListenAddress)
    const tlsListen = yield* parseAll(input.tlsListen, SmtpServer.parseListenAddress)
    const unix = yield* unixAccess(input, [...listen, ...tlsListen])
    // The inbox (HTTP server, MIME parser) is loaded only when asked for: a plain `serve` stays small.
    let withInbox: ((o: DevServer.DevServerOptions) => ReturnType<typeof Inbox.layer>) | undefined
    if (Option.isSome(input.http)) {
      const inbox = yield* Effect.promise(() => import("./inbox/Inbox.ts"))
      const http = inbox.parseOptions(input.http.value, Option.getOrUndefined(input.httpAuth))
      if (Result.isFailure(http)) return yield* usage(http.failure)
      withInbox = (o) => inbox.layer(o, http.success)
    } else if (Option.isSome(input.httpAuth)) {
      return yield* usage("--http-auth goes with --http")
    }
    const faults: Array<DevServer.Fault> = []
    for (const rule of input.fault) {
      const f = DevServer.parseFault(rule)
      if (Result.isFailure(f)) return yield* usage(f.failure)
      faults.push(f.success)
    }
    const users = new Map<string, string>()
    for (const a of input.auth) {
      const i = a.indexOf(":")
      if (i <= 0) return yield* usage(`invalid --auth "${a}": expected USER:PASSWORD`)
      users.set(a.slice(0, i), a.slice(i + 1))
    }
    const duration = (o: Option.Option<string>) =>
      Option.isNone(o) ? Effect.succeed(undefined) : Effect.mapError(Effect.fromResult(Durations.parse(o.value)), usage)
    const readTimeout = yield* duration(input.readTimeout)
    const writeTimeout = yield* duration(input.writeTimeout)
    const proxyTimeout = yield* duration(input.proxyTimeout)
    const greetingDelay = yield* duration(input.greetingDelay)
    if (input.workers < 1 || input.workers > 256) return yield* usage(`invalid --workers ${input.workers}: 1 to 256`)
    if (input.workers > 1 && withInbox !== undefined) {
      return yield* usage("--http serves one process's inbox: use it with --workers 1")
    }
    if (input.proxyProtocol !== input.proxyTrusted.length > 0) {
      return yield* usage("--proxy-protocol and --proxy-trusted go together: the proxies to trust must be named")
    }
    for (const [name, list] of [["--proxy-trusted", input.proxyTrusted], ["--xclient-trusted", input.xclientTrusted]] as const) {
      const networks = IpNetworks.parse(list)
      if (Result.isFailure(networks)) return yield* usage(`invalid ${name}: ${networks.failure}`)
    }
    const proxyProtocol = input.proxyProtocol ? { trusted: input.proxyTrusted, timeout: proxyTimeout } : undefined
    const worker = Workers.workerSettings()

    if (Option.isSome(input.tlsCert) !== Option.isSome(input.tlsKey)) {
      return yield* usage("--tls-cert and --tls-key go together")
    }
    let tls: { key: string; cert: string } | undefined
    if (Option.isSome(input.tlsCert) && Option.isSome(input.tlsKey)) {
      const cert = input.tlsCert.value
      const key = input.tlsKey.value
      tls = yield* Effect.try({
        try: () => ({ cert: fs.readFileSync(cert, "utf8"), key: fs.readFileSync(key, "utf8") }),
        catch: (e) => usage(`cannot read TLS files: ${(e as Error).message}`)
      })
    } else if (input.tlsSelfSigned) {
      // One certificate for all workers: the supervisor's.
      tls = worker?.selfSigned ?? (yield* SelfSigned.make(input.domain))
    }
    if (tlsListen.length > 0 && tls === undefined) {
      return yield* usage("--tls-listen needs --tls-cert/--tls-key or --tls-self-signed")
    }

    const emit = input.events === "none"
      ? () => Effect.void
      : (e: DevServer.Event) => writeStdout(JSON.stringify(e) + "\n")
    const some = <A>(o: Option.Option<A>) => Option.getOrUndefined(o)
    const options: DevServer.DevServerOptions = {
      maildir: input.maildir,
      users,
      faults,
      emit,
      server: {
        listen: [
          ...listen.map((endpoint) => ({ endpoint, unix, proxyProtocol })),
          ...tlsListen.map((endpoint) => ({ endpoint, implicitTls: true, unix, proxyProtocol }))
        ],
        domain: input.domain,
        protocol: input.lmtp ? "lmtp" : "smtp",
        tls,
        maxMessageBytes: some(input.maxMessageBytes),
        maxRecipients: some(input.maxRecipients),
        maxLineLength: some(input.maxLineLength),
        maxBodyLineLength: some(input.maxBodyLineLength),
        maxConnections: some(input.maxConnections),
        maxConnectionsPerIp: some(input.maxConnectionsPerIp),
        xclient: input.xclientTrusted.length > 0 ? { trusted: input.xclientTrusted } : undefined,
        greetingDelay,
        timeouts: {
          ...(readTimeout === undefined ? {} : { command: readTimeout, data: readTimeout }),
          ...(writeTimeout === undefined ? {} : { write: writeTimeout })
        },
        bareLineEndings: input.bareLf,
        logTraffic: input.trace,
        requireAuth: input.requireAuth,
        allowInsecureAuth: input.allowInsecureAuth,
        extensions: {
          smtputf8: input.smtputf8,
          binaryMime: input.binarymime,
          chunking: true,
          requireTls: input.requiretls,
          dsn: input.dsn
        }
      }
    }
    // --trace: the connections' Debug logs on stderr (a worker's stderr is the supervisor's).
    const traced = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      input.trace ? Effect.provideService(effect, References.MinimumLogLevel, "Debug") : effect
    if (worker !== undefined) return yield* traced(Workers.runWorker(options, worker, input.events === "json"))
    if (input.workers > 1) {
      return yield* Workers.supervise({
        workers: input.workers,
        listen: options.server.listen,
        maxConnectionsPerIp: ServerConfig.resolve(options.server).maxConnectionsPerIp,
        emit,
        shutdownGrace: Duration.seconds(30),
        selfSigned: input.tlsSelfSigned ? tls : undefined
      })
    }
    // Runs until SIGINT/SIGTERM interrupts it; closing the layer answers 421 to clients.
    return yield* traced(Layer.launch(withInbox === undefined ? DevServer.layer(options) : withInbox(options)))
  })

const serveCommand = Command.make("serve", serveFlags, serve).pipe(
  Command.withDescription("Run a local mail server that stores every message it receives in a Maildir"),
  Command.withExamples([
    { command: "effect-smtp serve", description: "Catch mail on 127.0.0.1:2525 into ./maildir" },
    { command: "effect-smtp serve --lmtp --listen unix:/tmp/lmtp.sock", description: "An LMTP delivery agent" },
    { command: "effect-smtp serve --http 127.0.0.1:8025", description: "The same, with the web inbox at http://127.0.0.1:8025/" },
    {
      command: "effect-smtp serve --lmtp --listen unix:/run/esmtp/lmtp --unix-owner postfix --unix-mode 0600",
      description: "An LMTP socket for Postfix's lmtp client (which runs as postfix)"
    },
    { command: "effect-smtp serve --listen 0.0.0.0:25 --workers 4", description: "Four server processes on port 25" },
    {
      command: "effect-smtp serve --listen 0.0.0.0:2525 --proxy-protocol --proxy-trusted 10.0.0.0/8",
      description: "Behind HAProxy or a load balancer in 10.0.0.0/8 sending the PROXY protocol"
    },
    {
      command: "effect-smtp serve --fault 'rcpt:^nobody@=550 5.1.1 No such user'",
      description: "Refuse one recipient"
    }
  ])
)

const root = Command.make("effect-smtp").pipe(
  Command.withDescription("SMTP and LMTP server and client on Effect"),
  Command.withSubcommands([serveCommand, sendCommand])
)

/** Exit codes: 0 done (and after SIGINT/SIGTERM), 1 refused, 2 usage error, 3 connection/TLS/protocol failure. */
const exitCode = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return typeof process.exitCode === "number" ? process.exitCode : 0
  if (Cause.hasInterruptsOnly(exit.cause)) return 0
  const error = Cause.squash(exit.cause)
  if (error instanceof UsageError) return 2
  if (CliError.isCliError(error)) return error._tag === "ShowHelp" && error.errors.length === 0 ? 0 : 2
  if (typeof error === "object" && error !== null && "exitCode" in error && typeof error.exitCode === "number") {
    return error.exitCode
  }
  return 1
}

// Usage errors go to stderr with a pointer to --help, so stdout stays clean for JSON.
const presenter = CliOutput.layerPresenter({
  present: (event) =>
    event._tag === "InvalidInvocation"
      ? Effect.gen(function*() {
        const formatter = CliOutput.defaultFormatter({ colors: false })
        yield* writeStderr(`${formatter.formatErrors(event.errors)}\nRun 'effect-smtp ${event.commandPath.slice(1).join(" ")} --help' for usage.\n`)
      })
      : CliOutput.defaultPresenter.present(event)
})

const main = Command.run(root, { version: "0.1.0" }).pipe(
  Effect.provide(presenter),
  // stdout carries JSON events and results; human logs go to stderr.
  Effect.provideService(Logger.LogToStderr, true),
  Effect.tapCause((cause) => {
    const error = Cause.squash(cause)
    if (Cause.hasInterruptsOnly(cause) || CliError.isCliError(error)) return Effect.void
    const message = error instanceof Error ? error.message : String(error)
    return writeStderr(`effect-smtp: ${message}\n`)
  }),
  Effect.provide(NodeServices.layer)
)

NodeRuntime.runMain(main, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    const code = exitCode(exit)
    process.exitCode = code
    onExit(code)
  }
})
