// Client-chosen ids (`clientMessageId`, `requestId`): 1-64 of [A-Za-z0-9_-].

export function newId(prefix = "c"): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return `${prefix}-${c.randomUUID()}`;
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
