import { Schema } from "effect"
import { gunzipSync, zstdDecompressSync } from "node:zlib"
import { type UsageRow, UsageBatchJson } from "./usage.ts"
import { decodeColumnarBatch, isColumnarBatch } from "./usageLine.ts"

/**
 * Usage batches as queue message bodies. A body is a batch's JSON, either as it is or compressed
 * and base64-encoded: about a tenth of the size, and nothing for the SQS client to escape.
 * - The LPO sends the columnar batch (`{"columns":[…],"rows":[[…],…]}`, usageLine.ts) compressed
 *   with zstd at level 1 (about half gzip's CPU for a smaller body).
 * - Bodies of earlier versions are still read (messages may outlive a deploy): `{"rows":[{…},…]}`,
 *   plain, zstd or gzip.
 * Compression is told apart by the first characters: JSON starts with "{", base64 of a zstd frame
 * with "KLUv", of gzip with "H4sI".
 */
export const ZSTD_BASE64_MAGIC = "KLUv"

const decodeObjectBatch = Schema.decodeUnknownSync(UsageBatchJson)

export const decodeUsageMessage = (body: string): ReadonlyArray<UsageRow> => {
  const json = body.startsWith("{")
    ? body
    : (body.startsWith(ZSTD_BASE64_MAGIC) ? zstdDecompressSync : gunzipSync)(Buffer.from(body, "base64")).toString("utf8")
  return isColumnarBatch(json) ? decodeColumnarBatch(json) : decodeObjectBatch(json).rows
}
