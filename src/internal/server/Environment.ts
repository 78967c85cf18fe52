/** The server options `SmtpServer.layerConfig` reads from `Config`, with their defaults. */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type Endpoint, TransportError } from "../../Transport.ts"
import type { ServerOptions } from "./Config.ts"

export const fromConfig = (
  parseListenAddress: (text: string) => Endpoint
): Effect.Effect<ServerOptions, TransportError | Config.ConfigError> =>
  Effect.gen(function*() {
    const env = yield* Config.all({
      listen: Config.String("SMTP_LISTEN").pipe(Config.withDefault("127.0.0.1:2525")),
      domain: Config.String("SMTP_DOMAIN").pipe(Config.withDefault("localhost")),
      protocol: Config.Literals(["smtp", "lmtp"], "SMTP_PROTOCOL").pipe(Config.withDefault("smtp" as const)),
      maxMessageBytes: Config.Int("SMTP_MAX_MESSAGE_BYTES").pipe(Config.withDefault(32 * 1024 * 1024)),
      maxRecipients: Config.Int("SMTP_MAX_RECIPIENTS").pipe(Config.withDefault(1000)),
      maxConnections: Config.Int("SMTP_MAX_CONNECTIONS").pipe(Config.withDefault(1000)),
      command: Config.Duration("SMTP_COMMAND_TIMEOUT").pipe(Config.withDefault(Duration.minutes(5)))
    })
    const listen = yield* Effect.try({
      try: () => env.listen.split(",").map((s) => s.trim()).filter((s) => s !== "").map(parseListenAddress),
      catch: (e) => new TransportError({ reason: "Listen", message: `SMTP_LISTEN: ${(e as Error).message}` })
    })
    const { command, ...options } = env
    return { ...options, timeouts: { command }, listen: listen.map((endpoint) => ({ endpoint })) }
  })
