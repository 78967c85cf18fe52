/**
 * The server options `SmtpServer.layerConfig` reads from `Config`: SMTP_SERVER_ and the option's
 * path in CONSTANT_CASE. Only SMTP_SERVER_LISTEN has a default of its own (127.0.0.1:2525), as
 * `listen` has none; every variable not set leaves its option to `SmtpServer.layer`'s default.
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import { type Endpoint, TransportError } from "../../Transport.ts"
import { optional, timeouts } from "../env.ts"
import { defaultTimeouts, type ServerOptions, type Timeouts } from "./Config.ts"

const PREFIX = "SMTP_SERVER_"

export const fromConfig = (
  parseListenAddress: (text: string) => Endpoint
): Effect.Effect<ServerOptions, TransportError | Config.ConfigError> =>
  Effect.gen(function*() {
    const env = yield* Config.all({
      listen: Config.String(`${PREFIX}LISTEN`).pipe(Config.withDefault("127.0.0.1:2525")),
      domain: optional(Config.String(`${PREFIX}DOMAIN`)),
      protocol: optional(Config.Literals(["smtp", "lmtp"], `${PREFIX}PROTOCOL`)),
      maxMessageBytes: optional(Config.Int(`${PREFIX}MAX_MESSAGE_BYTES`)),
      maxRecipients: optional(Config.Int(`${PREFIX}MAX_RECIPIENTS`)),
      maxConnections: optional(Config.Int(`${PREFIX}MAX_CONNECTIONS`)),
      maxConnectionsPerIp: optional(Config.Int(`${PREFIX}MAX_CONNECTIONS_PER_IP`)),
      requireAuth: optional(Config.Boolean(`${PREFIX}REQUIRE_AUTH`)),
      allowInsecureAuth: optional(Config.Boolean(`${PREFIX}ALLOW_INSECURE_AUTH`)),
      logTraffic: optional(Config.Boolean(`${PREFIX}LOG_TRAFFIC`)),
      timeouts: timeouts(PREFIX, Object.keys(defaultTimeouts) as ReadonlyArray<keyof Timeouts>)
    })
    const listen = yield* Effect.try({
      try: () => env.listen.split(",").map((s) => s.trim()).filter((s) => s !== "").map(parseListenAddress),
      catch: (e) => new TransportError({ reason: "Listen", message: `${PREFIX}LISTEN: ${(e as Error).message}` })
    })
    return { ...env, listen: listen.map((endpoint) => ({ endpoint })) }
  })
