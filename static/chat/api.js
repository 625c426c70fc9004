// The JSON API (docs/openapi.yaml) as the page uses it. Nothing here touches
// the page: every call returns data or throws an ApiError, and sendMessage
// yields the events of one turn as an async iterator.
//
// An aborted request throws the browser's AbortError unchanged, so that the
// caller can tell "the customer pressed Stop" (signal.aborted) from a failure.

import { gettext, interpolate, language } from "./translation.js";

export class ApiError extends Error {
  /**
   * status: the HTTP status, or 0 when no response came (code "network") or
   * the stream broke off (code "interrupted"); code and message: the API's
   * error; retryAfter: seconds from the Retry-After header, or null;
   * sessionId: the session the error concerns, when the API said.
   */
  constructor(status, code, message, { retryAfter = null, sessionId = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.sessionId = sessionId;
  }
}

async function request(path, { method = "GET", sessionId = null, body, signal, accept = "application/json" } = {}) {
  // The page's language (the customer's choice, or the shop's page's): the API answers in it.
  const headers = { Accept: accept, "X-Chat-Language": language };
  if (sessionId) headers["X-Session-Id"] = sessionId;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (signal && signal.aborted) throw error;
    throw new ApiError(0, "network", gettext("Could not reach the server. Check your connection."));
  }
}

async function errorFrom(response) {
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    /* not JSON (a proxy's error page) or cut off */
  }
  const error = (data && data.error) || {};
  const seconds = parseInt(response.headers.get("Retry-After"), 10);
  return new ApiError(
    response.status,
    error.code || "http_error",
    error.message || interpolate(gettext("Something went wrong (HTTP %(status)s)."), { status: response.status }),
    { retryAfter: Number.isFinite(seconds) ? seconds : null, sessionId: (data && data.sessionId) || null },
  );
}

async function json(response, signal) {
  if (!response.ok) throw await errorFrom(response);
  try {
    return await response.json();
  } catch (error) {
    if (signal && signal.aborted) throw error;
    throw new ApiError(0, "interrupted", gettext("The connection was interrupted. Reload the page to try again."));
  }
}

/** GET /api/history: {sessionId, handoff, turnInProgress, messages, hasMore, before}: the newest
 * page, or with `before` (a seq) the page of messages older than it. */
export async function getHistory(sessionId, signal, before = null) {
  const path = before === null ? "/api/history" : `/api/history?${new URLSearchParams({ before: String(before) })}`;
  return json(await request(path, { sessionId, signal }), signal);
}

/** DELETE /api/history: resolves when the conversation is gone (also when it was already). */
export async function deleteConversation(sessionId) {
  const response = await request("/api/history", { method: "DELETE", sessionId });
  if (response.ok || response.status === 404) return;
  throw await errorFrom(response);
}

/** POST /api/handoff: {sessionId, handoff, notice, newSession}. */
export async function requestHandoff(sessionId) {
  const body = sessionId ? { sessionId } : {};
  return json(await request("/api/handoff", { method: "POST", body }));
}

/** POST /api/handoff/email: {sessionId, email}: the address the first staff reply is emailed to. */
export async function leaveEmail(sessionId, email) {
  return json(await request("/api/handoff/email", { method: "POST", body: { sessionId, email } }));
}

/** GET /api/devices: {sessionId, devices: [{device, label, joinedAt, lastSeenAt, current}]}. */
export async function getDevices(sessionId) {
  return json(await request("/api/devices", { sessionId }));
}

/** POST /api/devices/link: {link, qrSvg, code, expiresAt, expiresInSeconds}. */
export async function offerDevice(sessionId) {
  return json(await request("/api/devices/link", { method: "POST", sessionId }));
}

/** POST /api/devices/join with {token} or {code} (and {check: true} to redeem nothing), as the browser of
 * `sessionId` if it has one: {sessionId, newSession, sameConversation}. */
export async function joinDevice(body, sessionId) {
  return json(await request("/api/devices/join", { method: "POST", sessionId, body }));
}

/** POST /api/devices/end: `device` (a number from getDevices, or "this") ends; resolves when it has. */
export async function endDevice(sessionId, device) {
  const response = await request("/api/devices/end", { method: "POST", sessionId, body: { device } });
  if (!response.ok) throw await errorFrom(response);
}

/** One long poll of GET /api/updates: {sessionId, handoff, turnInProgress, messages, hasMore} once something
 * is newer than message `after` or the state is no longer `state`, or empty after ~25 s. */
export async function getUpdates(sessionId, after, state, signal) {
  const query = new URLSearchParams({ after: String(after), state });
  return json(await request(`/api/updates?${query}`, { sessionId, signal }), signal);
}

/**
 * POST /api/chat, streamed. Yields {type: "session", sessionId}, then
 * {type: "delta", text} for each piece of the reply, then {type: "done", data}
 * with the API's reply payload, and ends. Throws an ApiError when the turn
 * is refused or fails.
 */
export async function* sendMessage({ text, clientMessageId, sessionId }, signal) {
  const body = { message: text, clientMessageId };
  if (sessionId) body.sessionId = sessionId;
  const response = await request("/api/chat", {
    method: "POST", body, signal, accept: "text/event-stream",
  });
  if (!response.ok) throw await errorFrom(response);
  if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
    const data = await json(response, signal); // a JSON reply: the same events, at once
    yield { type: "session", sessionId: data.sessionId, previousConversationFull: data.previousConversationFull };
    yield { type: "done", data };
    return;
  }
  for await (const event of serverSentEvents(response.body, signal)) {
    if (event.name === "session") {
      yield { type: "session", sessionId: event.data.sessionId,
        previousConversationFull: event.data.previousConversationFull };
    } else if (event.name === "delta") {
      yield { type: "delta", text: event.data.text };
    } else if (event.name === "done") {
      yield { type: "done", data: event.data };
      return;
    } else if (event.name === "error") {
      const error = event.data.error || {};
      throw new ApiError(0, error.code || "stream_error", error.message || gettext("The assistant could not answer."), {
        sessionId: event.data.sessionId || null,
      });
    }
  }
  throw new ApiError(0, "interrupted", gettext("The connection was interrupted before the answer was complete."));
}

/** The events of a text/event-stream body as {name, data} with data parsed as JSON. */
async function* serverSentEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (signal && signal.aborted) throw error;
        throw new ApiError(0, "interrupted", gettext("The connection was interrupted before the answer was complete."));
      }
      if (chunk.done) return;
      buffer += chunk.value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // a consumer that stops early closes the connection
  }
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return null;
  try {
    return { name, data: JSON.parse(data.join("\n")) };
  } catch (error) {
    return null;
  }
}
