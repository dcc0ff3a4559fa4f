import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import fc from "fast-check"
import { pgArrayLiteral } from "../src/domain/pgArrayLiteral.ts"
import { freshPgLayer } from "./support/services.ts"

/** What PostgreSQL can store of a JS string: UTF-8 (lone surrogates become U+FFFD), no U+0000. */
const storable = (s: string): string => s.toWellFormed().replaceAll("\u0000", "\uFFFD")

describe("pgArrayLiteral (real PostgreSQL reads it back)", () => {
  const PgLive = freshPgLayer("pg_array_literal", 1)

  it.live("text values, NULLs, empty strings and every kind of character come back as sent", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const readBack = (values: ReadonlyArray<string | null>) =>
        sql.unsafe<{ v: string | null }>("SELECT v FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n", [pgArrayLiteral(values)])
          .pipe(Effect.map((rows) => rows.map((r) => r.v)))
      // The values the literal syntax treats specially, then random ones.
      const special = ["", "NULL", "null", " ", "a,b", "{x}", "\"", "\\", "\\\"", "a b", "'", "\u0000", "\uD800", "é", "😀"]
      assert.deepStrictEqual(yield* readBack([...special, null]), [...special.map(storable), null])
      const samples = fc.sample(fc.array(fc.option(fc.string({ unit: "binary", maxLength: 20 })), { maxLength: 30 }), 150)
      for (const values of samples) {
        assert.deepStrictEqual(yield* readBack(values), values.map((v) => (v === null ? null : storable(v))))
      }
    }).pipe(Effect.provide(PgLive)), 30_000)

  it.live("doubles and integers come back exactly", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const samples = fc.sample(fc.tuple(
        fc.array(fc.option(fc.double({ noNaN: true })), { maxLength: 30 }),
        fc.array(fc.integer(), { maxLength: 30 })
      ), 150)
      for (const [doubles, ints] of samples) {
        const readBack = (type: string, values: ReadonlyArray<number | null>) =>
          sql.unsafe<{ v: string | null }>(`SELECT v::text AS v FROM unnest($1::${type}[]) WITH ORDINALITY AS t(v, n) ORDER BY n`, [pgArrayLiteral(values)])
            .pipe(Effect.map((rows) => rows.map((r) => (r.v === null ? null : Number(r.v)))))
        // -0 included: float8 keeps its sign (an int has none).
        assert.deepStrictEqual(yield* readBack("float8", [...doubles, -0, 0]), [...doubles, -0, 0])
        assert.deepStrictEqual(yield* readBack("int", [...ints, -0]), [...ints, 0])
      }
    }).pipe(Effect.provide(PgLive)), 30_000)
})
