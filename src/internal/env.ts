/**
 * What `SmtpServer.layerConfig` and `Mailer.layerConfig` share: one naming rule (a prefix, then
 * the option's path in CONSTANT_CASE: `timeouts.command` is `…_TIMEOUTS_COMMAND`), and variables
 * that are not set leaving their option to its default rather than repeating it here.
 */
import * as Config from "effect/Config"
import { SourceError } from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"

/** `undefined` when the variable is not set; a value that is set must still parse. */
export const optional = <A>(config: Config.Config<A>): Config.Config<A | undefined> =>
  Config.map(Config.option(config), Option.getOrUndefined)

/** `maxMessageBytes` → `MAX_MESSAGE_BYTES`. */
const constantCase = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()

/** The timeouts that are set, each under `<prefix>TIMEOUTS_<NAME>`; the others are left out. */
export const timeouts = <K extends string>(
  prefix: string,
  names: ReadonlyArray<K>
): Config.Config<{ readonly [P in K]?: Duration.Duration }> =>
  Config.map(
    Config.all(names.map((name) => optional(Config.Duration(`${prefix}TIMEOUTS_${constantCase(name)}`)))),
    (values) => {
      const set: { [P in K]?: Duration.Duration } = {}
      names.forEach((name, i) => {
        const value = values[i]
        if (value !== undefined) set[name] = value
      })
      return set
    }
  )

/** Both variables or neither: `first` alone would be silently ignored otherwise. */
export const together = <A, B>(
  first: readonly [string, Config.Config<A>],
  second: readonly [string, Config.Config<B>]
): Config.Config<readonly [A, B] | undefined> =>
  Config.flatMap(
    Config.all([optional(first[1]), optional(second[1])]),
    ([a, b]) =>
      a !== undefined && b !== undefined
        ? Config.succeed([a, b] as const)
        : a === undefined && b === undefined
        ? Config.succeed(undefined)
        : Config.fail(new SourceError({ message: `${first[0]} and ${second[0]} go together: set both or neither` }))
  )
