/**
 * A request id: a random per-process tag and the process's request number in base 36. Unique
 * across nodes and restarts, and cheap: the usage thread makes the ids of the rows the serving
 * thread recorded by number only (usageChunk.ts).
 */
export const requestIdOf = (tag: string, seq: number): string => `${tag}-${seq.toString(36)}`
