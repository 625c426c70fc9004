// The sessionId this browser keeps (session-flow.md steps 4 to 6).
//
// It lives in localStorage under "sessionId" and is only ever a value the
// backend returned: the page never makes one up. It is read again before every
// request (another tab may have changed it). When localStorage is unavailable
// (storage disabled) the id is kept in memory, for this tab only.
//
// Inside a shop's page (embed.js) the shop's page keeps the id instead, in its
// own storage: a third-party frame's storage is partitioned or wiped by the
// browsers. Here it is then kept in memory only, and every change is handed
// back to the shop's page (keepInHost).

export const KEY = "sessionId";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let memoryId = null;
let handBack = null; // embedded: tells the shop's page the id changed (null: forgotten)

/** Embedded: start from the id the shop's page keeps; hand each change back to it. */
export function keepInHost(id, onChange) {
  memoryId = isSessionId(id) ? id : null;
  handBack = onChange;
}

/** Embedded: the shop's page has another id (its other tab changed it). The page follows it as
 * it follows another tab's localStorage: by the same storage event. */
export function takeFromHost(id) {
  const next = isSessionId(id) ? id : null;
  if (next === memoryId) return;
  memoryId = next;
  window.dispatchEvent(new StorageEvent("storage", { key: KEY }));
}

export function isSessionId(value) {
  return typeof value === "string" && UUID.test(value);
}

/** The stored id, or null; a malformed one is dropped quietly. */
export function readSessionId() {
  if (handBack) return memoryId;
  let value;
  try {
    value = localStorage.getItem(KEY);
  } catch (error) {
    value = memoryId;
  }
  if (value !== null && !isSessionId(value)) {
    forgetSessionId();
    return null;
  }
  return value;
}

export function storeSessionId(id) {
  if (!isSessionId(id)) return;
  const changed = id !== memoryId;
  memoryId = id;
  if (handBack) {
    if (changed) handBack(id);
    return;
  }
  try {
    if (localStorage.getItem(KEY) !== id) localStorage.setItem(KEY, id);
  } catch (error) {
    /* memoryId keeps it */
  }
}

export function forgetSessionId() {
  const had = memoryId !== null;
  memoryId = null;
  if (handBack) {
    if (had) handBack(null);
    return;
  }
  try {
    localStorage.removeItem(KEY);
  } catch (error) {
    /* nothing stored */
  }
}

/** A new id for one question (not a session id): Retry sends it again so the turn is not stored
 * twice. A random UUID, the only kind the server finds a lost first question's conversation by. */
export function newClientMessageId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// The customer's choice of language (the selector in the top bar), kept beside the session id;
// in memory when localStorage is unavailable. Only a code the page offers is kept.
export const LANGUAGE_KEY = "chatLanguage";
const LANGUAGE = /^[a-z]{2,3}(-[a-z0-9]{2,8})?$/;
let memoryLanguage = null;

export function readLanguage() {
  let value = memoryLanguage;
  try {
    value = localStorage.getItem(LANGUAGE_KEY) || memoryLanguage;
  } catch (error) {
    /* memoryLanguage */
  }
  return typeof value === "string" && LANGUAGE.test(value) ? value : null;
}

export function storeLanguage(code) {
  if (!LANGUAGE.test(code)) return;
  memoryLanguage = code;
  try {
    localStorage.setItem(LANGUAGE_KEY, code);
  } catch (error) {
    /* memoryLanguage keeps it */
  }
}
