/**
 * The ledger in PostgreSQL: one row per message, with its state and enqueue time in columns
 * (a partial index over the messages in flight answers the depth) and the record as JSON text.
 * Times are the application's clock in epoch milliseconds.
 */
import * as DateTime from "effect/DateTime"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Migrator from "effect/sql/Migrator"
import * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { decode, encode, type Ledger, LedgerError, type LedgerStore } from "./Ledger.ts"

const migrations = (table: string) =>
  Migrator.fromRecord({
    "0001_create_table": Effect.gen(function*() {
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      yield* sql`CREATE TABLE IF NOT EXISTS ${sql(table)} (
        queue_name VARCHAR(255) NOT NULL,
        id VARCHAR(255) NOT NULL,
        state VARCHAR(16) NOT NULL,
        enqueued_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (queue_name, id)
      )`
      yield* sql`CREATE INDEX IF NOT EXISTS ${sql(`idx_${table}_active`)} ON ${sql(table)} (queue_name, enqueued_at)
        WHERE state NOT IN ('delivered', 'dead')`
      yield* sql`CREATE INDEX IF NOT EXISTS ${sql(`idx_${table}_final`)} ON ${sql(table)} (updated_at)
        WHERE state IN ('delivered', 'dead')`
    })
  })

const failed = (message: string) => (cause: SqlError) => new LedgerError({ message, cause })

export const make = (options: { readonly table: string; readonly retention: Duration.Duration }) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const supported = sql.onDialectOrElse({ pg: () => true, orElse: () => false })
    if (!supported) return yield* Effect.die(new Error("the mail queue's SQL store needs PostgreSQL"))
    yield* Effect.orDie(Migrator.make({})({ loader: migrations(options.table), table: `${options.table}_migrations` }))
    const table = sql(options.table)
    const millis = (d: DateTime.Utc) => DateTime.toEpochMillis(d)

    return {
      forQueue: (name): Ledger => ({
        create: (status) =>
          sql<{ readonly id: string }>`
            INSERT INTO ${table} (queue_name, id, state, enqueued_at, updated_at, record)
            VALUES (${name}, ${status.id}, ${status.state}, ${millis(status.enqueuedAt)}, ${millis(status.updatedAt)}, ${
            encode(status)
          })
            ON CONFLICT (queue_name, id) DO NOTHING
            RETURNING id
          `.pipe(Effect.map((rows) => rows.length === 1), Effect.mapError(failed("could not record the message"))),
        put: (status) =>
          sql`
            INSERT INTO ${table} (queue_name, id, state, enqueued_at, updated_at, record)
            VALUES (${name}, ${status.id}, ${status.state}, ${millis(status.enqueuedAt)}, ${millis(status.updatedAt)}, ${
            encode(status)
          })
            ON CONFLICT (queue_name, id) DO UPDATE
            SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at, record = EXCLUDED.record
          `.pipe(Effect.asVoid, Effect.mapError(failed("could not update the message's status"))),
        get: (id) =>
          sql<{ readonly record: string }>`SELECT record FROM ${table} WHERE queue_name = ${name} AND id = ${id}`.pipe(
            Effect.mapError(failed("could not read the message's status")),
            Effect.flatMap((rows) => rows[0] === undefined ? Effect.undefined : decode(rows[0].record))
          ),
        remove: (id) =>
          sql`DELETE FROM ${table} WHERE queue_name = ${name} AND id = ${id}`.pipe(
            Effect.asVoid,
            Effect.mapError(failed("could not remove the message's status"))
          ),
        depth: sql<{ readonly depth: string | number; readonly oldest: string | number | null }>`
          SELECT COUNT(*) AS depth, MIN(enqueued_at) AS oldest FROM ${table}
          WHERE queue_name = ${name} AND state NOT IN ('delivered', 'dead')
        `.pipe(
          Effect.map((rows) => {
            const row = rows[0]
            return {
              depth: Number(row?.depth ?? 0),
              oldest: row?.oldest == null ? undefined : DateTime.makeUnsafe(Number(row.oldest))
            }
          }),
          Effect.mapError(failed("could not read the queue's depth"))
        ),
        cleanup: Duration.isFinite(options.retention)
          ? Effect.flatMap(DateTime.now, (now) =>
            sql`DELETE FROM ${table} WHERE queue_name = ${name} AND state IN ('delivered', 'dead') AND updated_at < ${
              millis(now) - Duration.toMillis(options.retention)
            }`).pipe(Effect.asVoid, Effect.mapError(failed("could not clean up the ledger")))
          : Effect.void
      })
    } satisfies LedgerStore
  })
