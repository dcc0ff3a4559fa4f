import { Schema } from "effect"
import { gunzipSync, zstdDecompressSync } from "node:zlib"
import { type UsageRow, UsageBatchJson } from "./usage.ts"
import { decodeUsageChunks, isUsageChunkBytes, rowsOfChunk } from "./usageChunk.ts"
import { decodeColumnarBatch, isColumnarBatch } from "./usageLine.ts"

/**
 * Usage batches as queue message bodies, compressed and base64-encoded (nothing for the SQS
 * client to escape):
 * - The LPO sends its usage chunks as bytes (`encodeUsageChunks`: the serving thread's columns as
 *   they are, no row is built or stringified on the way) compressed with zstd at level 1.
 * - A chunk too large for one message goes as the columnar JSON batch
 *   (`{"columns":[…],"rows":[[…],…]}`, usageLine.ts), split as far as needed.
 * - Bodies of earlier versions are still read (messages may outlive a deploy): `{"rows":[{…},…]}`,
 *   plain, zstd or gzip.
 * Compression is told apart by the first characters: JSON starts with "{", base64 of a zstd frame
 * with "KLUv", of gzip with "H4sI"; after it, chunk bytes start with "TBUC".
 */
export const ZSTD_BASE64_MAGIC = "KLUv"

const decodeObjectBatch = Schema.decodeUnknownSync(UsageBatchJson)

const decodeJsonBatch = (json: string): ReadonlyArray<UsageRow> => (isColumnarBatch(json) ? decodeColumnarBatch(json) : decodeObjectBatch(json).rows)

export const decodeUsageMessage = (body: string): ReadonlyArray<UsageRow> => {
  if (body.startsWith("{")) return decodeJsonBatch(body)
  const bytes = (body.startsWith(ZSTD_BASE64_MAGIC) ? zstdDecompressSync : gunzipSync)(Buffer.from(body, "base64"))
  return isUsageChunkBytes(bytes) ? decodeUsageChunks(bytes).flatMap(rowsOfChunk) : decodeJsonBatch(bytes.toString("utf8"))
}
