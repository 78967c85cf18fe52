/**
 * The ledger in Redis: one string key per message (the record as JSON) and, per queue, a sorted
 * set of the messages still in flight scored by their enqueue time (its size is the depth, its
 * first member the oldest). Each change of a record and of the set is one script, so they
 * never disagree. Final records expire by themselves after the retention.
 */
import * as DateTime from "effect/DateTime"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redis from "effect/persistence/Redis"
import { decode, encode, isFinal, type Ledger, LedgerError, type LedgerStore, type MessageStatus } from "./Ledger.ts"

const createScript = Redis.script(
  (...args: [keyStatus: string, keyActive: string, record: string, id: string, enqueuedAt: number]) => args,
  {
    numberOfKeys: 2,
    lua: `
if redis.call("SET", KEYS[1], ARGV[1], "NX") then
  redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
  return 1
end
return 0
`
  }
).withReturnType<number>()

const putScript = Redis.script(
  (...args: [
    keyStatus: string,
    keyActive: string,
    record: string,
    id: string,
    enqueuedAt: number,
    final: 0 | 1,
    retentionMillis: number
  ]) => args,
  {
    numberOfKeys: 2,
    lua: `
if ARGV[4] == "1" then
  if ARGV[5] == "0" then
    redis.call("SET", KEYS[1], ARGV[1])
  else
    redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[5])
  end
  redis.call("ZREM", KEYS[2], ARGV[2])
else
  redis.call("SET", KEYS[1], ARGV[1])
  redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
end
`
  }
)

/** The number of messages in flight and the enqueue time of the oldest, in one read. */
const depthScript = Redis.script((keyActive: string) => [keyActive], {
  numberOfKeys: 1,
  lua: `
local first = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
return { redis.call("ZCARD", KEYS[1]), first[2] or false }
`
}).withReturnType<readonly [number, string | null]>()

const failed = (message: string) => (cause: Redis.RedisError) => new LedgerError({ message, cause })

export const make = (options: { readonly prefix: string; readonly retention: Duration.Duration }) =>
  Effect.map(Redis.Redis, (redis): LedgerStore => {
    const create = redis.eval(createScript)
    const put = redis.eval(putScript)
    const depth = redis.eval(depthScript)
    // 0 keeps final records forever; PX needs a positive integer.
    const retention = Duration.isFinite(options.retention) ? Math.max(1, Math.ceil(Duration.toMillis(options.retention))) : 0
    return {
      forQueue: (name): Ledger => {
        const active = `${options.prefix}active:${name}`
        const key = (id: string) => `${options.prefix}status:${name}:${id}`
        const score = (s: MessageStatus) => DateTime.toEpochMillis(s.enqueuedAt)
        return {
          create: (status) =>
            Effect.suspend(() => create(key(status.id), active, encode(status), status.id, score(status))).pipe(
              Effect.map((created) => created === 1),
              Effect.mapError(failed("could not record the message"))
            ),
          put: (status) =>
            Effect.suspend(() =>
              put(key(status.id), active, encode(status), status.id, score(status), isFinal(status.state) ? 1 : 0, retention)
            ).pipe(Effect.mapError(failed("could not update the message's status"))),
          get: (id) =>
            redis.send<string | null>("GET", key(id)).pipe(
              Effect.mapError(failed("could not read the message's status")),
              Effect.flatMap((text) => text === null ? Effect.undefined : decode(text))
            ),
          remove: (id) =>
            Effect.andThen(redis.send("DEL", key(id)), redis.send("ZREM", active, id)).pipe(
              Effect.asVoid,
              Effect.mapError(failed("could not remove the message's status"))
            ),
          depth: depth(active).pipe(
            Effect.map(([count, oldest]) => ({
              depth: Number(count),
              oldest: oldest === null || oldest === undefined ? undefined : DateTime.makeUnsafe(Number(oldest))
            })),
            Effect.mapError(failed("could not read the queue's depth"))
          ),
          cleanup: Effect.void // final records expire by themselves
        }
      }
    }
  })
