// The long-poll loop on GET /api/updates: how staff replies, notices and
// another tab's messages reach an open page without a reload.
//
// One loop per tab. It runs while the page is visible and has a conversation;
// while the tab is hidden it stops asking (the request in flight is dropped)
// and polls at once when the tab is shown again. Errors back off, 1 s doubling
// to 30 s, or longer if the server's Retry-After says so, each wait spread at
// random; any answer resets that. kick() ends a wait or a poll and asks again
// at once (the cursor or the session changed, or the customer acted).

import { ApiError, getUpdates } from "./api.js";

const MAX_BACKOFF_MS = 30000;
// Even a server that answers at once is not asked more than this often.
const MIN_GAP_MS = 250;

/**
 * `position()` says what to ask for: {sessionId, after, state} or null (no
 * conversation, or its history is not loaded yet); it is read before every poll.
 * `onUpdate(data, asked)` gets each answer with what was asked; `onGone(asked)`
 * is told when the conversation no longer exists.
 */
export function startUpdates({ position, onUpdate, onGone }) {
  let controller = null;
  let wake = null;
  let failures = 0;

  function kick() {
    if (controller) controller.abort();
    if (wake) wake();
  }

  function pause(ms) {
    return new Promise((resolve) => {
      const timer = ms === Infinity ? null : setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wake = null;
        resolve();
      }
      wake = done;
    });
  }

  async function loop() {
    for (;;) {
      const asked = document.hidden ? null : position();
      if (!asked) {
        await pause(Infinity); // until kick(): the tab is shown, or a conversation starts
        continue;
      }
      controller = new AbortController();
      const started = Date.now();
      let data = null;
      try {
        data = await getUpdates(asked.sessionId, asked.after, asked.state, controller.signal);
      } catch (error) {
        if (controller.signal.aborted) {
          controller = null;
          continue; // kicked or hidden: ask again (or wait) straight away
        }
        controller = null;
        if (!(error instanceof ApiError && error.code === "session_not_found")) {
          failures++;
          // A busy server (429 too_many_connections, 503 overloaded) says how long to wait.
          // Both waits are spread at random (half the back-off to all of it; the Retry-After to
          // half as long again): pages cut off together (a deploy, an outage) must not all ask
          // again together, and again at each doubling.
          const backoff = Math.min(1000 * 2 ** (failures - 1), MAX_BACKOFF_MS) * (0.5 + Math.random() / 2);
          const told = error instanceof ApiError && error.retryAfter
            ? error.retryAfter * 1000 * (1 + Math.random() / 2) : 0;
          await pause(Math.max(backoff, told));
          continue;
        }
      }
      controller = null;
      failures = 0;
      if (data) onUpdate(data, asked);
      else onGone(asked);
      if (data && data.hasMore) continue; // one page of many: the next one at once
      const gap = MIN_GAP_MS - (Date.now() - started);
      if (gap > 0) await pause(gap);
    }
  }

  document.addEventListener("visibilitychange", () => {
    kick(); // hidden: drop the poll in flight; shown: poll now
  });

  loop();
  return { kick };
}
