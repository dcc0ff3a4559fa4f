/** An error's message for logs and error values. Never throws (String() can, on a hostile object). */
export const messageOf = (cause: unknown): string => {
  if (cause instanceof Error) return cause.message
  try {
    return String(cause)
  } catch {
    return typeof cause
  }
}
