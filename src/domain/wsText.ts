import type WebSocket from "ws"

/** A WebSocket message (any of the shapes `ws` delivers) as text. */
export const wsText = (data: WebSocket.RawData): string =>
  Array.isArray(data)
    ? Buffer.concat(data).toString("utf8")
    : data instanceof ArrayBuffer
      ? Buffer.from(data).toString("utf8")
      : data.toString("utf8")
