/**
 * The Mailer options `Mailer.layerConfig` reads from `Config`: SMTP_CLIENT_ and the option's
 * path in CONSTANT_CASE, as the server's SMTP_SERVER_. Every variable not set leaves its option
 * to `Mailer.layer`'s default.
 */
import * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import type * as Redacted from "effect/Redacted"
import { optional, timeouts, together } from "../env.ts"
import { defaultTimeouts, type Timeouts } from "./Config.ts"
import type { MailerOptions } from "../../Mailer.ts"

const PREFIX = "SMTP_CLIENT_"

const name = (key: string) => `${PREFIX}${key}`

export const fromConfig: Config.Config<MailerOptions> = Config.map(
  Config.all({
    host: optional(Config.String(name("HOST"))),
    port: optional(Config.Port(name("PORT"))),
    path: optional(Config.String(name("PATH"))),
    security: optional(Config.Literals(["starttls", "opportunistic", "implicit", "none"], name("SECURITY"))),
    protocol: optional(Config.Literals(["smtp", "lmtp"], name("PROTOCOL"))),
    localName: optional(Config.String(name("LOCAL_NAME"))),
    auth: together<string, Redacted.Redacted<string>>(
      [name("AUTH_USERNAME"), Config.String(name("AUTH_USERNAME"))],
      [name("AUTH_PASSWORD"), Config.Redacted(name("AUTH_PASSWORD"))]
    ),
    allowInsecureAuth: optional(Config.Boolean(name("ALLOW_INSECURE_AUTH"))),
    logTraffic: optional(Config.Boolean(name("LOG_TRAFFIC"))),
    timeouts: timeouts(PREFIX, Object.keys(defaultTimeouts) as ReadonlyArray<keyof Timeouts>),
    pool: Config.all({
      size: optional(Config.Int(name("POOL_SIZE"))),
      maxMessagesPerConnection: optional(Config.Int(name("POOL_MAX_MESSAGES_PER_CONNECTION"))),
      idleTimeout: optional(Config.Duration(name("POOL_IDLE_TIMEOUT")))
    }),
    rateLimit: together<number, Duration.Duration>(
      [name("RATE_LIMIT_MESSAGES"), Config.Int(name("RATE_LIMIT_MESSAGES"))],
      [name("RATE_LIMIT_INTERVAL"), Config.Duration(name("RATE_LIMIT_INTERVAL"))]
    )
  }),
  ({ auth, rateLimit, ...options }): MailerOptions => ({
    ...options,
    auth: auth === undefined ? undefined : { _tag: "Password", username: auth[0], password: auth[1] },
    rateLimit: rateLimit === undefined ? undefined : { messages: rateLimit[0], interval: rateLimit[1] }
  })
)
