// The chat page's start-up and flow: session-flow.md steps 4 to 7 in the
// browser, and a person when the customer needs one (the handoff).
//
// session.js keeps the sessionId, api.js talks to the server, view.js draws,
// updates.js long-polls for what others write (staff, notices, other tabs).
// This module holds the page's state and decides what each answer means.

import * as api from "./api.js";
import * as handoffPage from "./handoff.js";
import { startDevices } from "./devices.js";
import { forgetSessionId, isSessionId, KEY, newClientMessageId, readSessionId, storeSessionId } from "./session.js";
import { startUpdates } from "./updates.js";
import * as view from "./view.js";
import { gettext, interpolate } from "./translation.js";
import { reloadingForChoice } from "./language.js";

// How often "turn_in_progress" (another tab's turn) or "overloaded" is waited out before giving up.
const BUSY_RETRIES = 3;

const state = {
  busy: false, // a turn of this tab is in flight
  controller: null, // aborts it (Stop)
  replyItem: null, // the reply it is writing, if any
  turnsEnded: 0, // counts this tab's finished turns: a poll asked before one ended is stale about turns
  generation: 0, // bumped when the view is reset, so that a stale turn or answer leaves it alone
  refreshWhenIdle: false, // another tab changed things while this one was busy
  shown: null, // the sessionId whose conversation the log shows (null: none yet)
  seqs: new Set(), // the seqs of the messages the log shows
  floor: -1, // every message up to this seq is shown, or will never be (see cursor())
  handoff: "assistant", // who answers: "assistant", "waiting" (for a person) or "staff"
  author: null, // the staff member last heard from
  requesting: false, // a "Talk to a person" request is in flight
  othersTurn: false, // the server said another tab's turn is being answered
  before: null, // the cursor of the older page of the history not shown yet (null: none is left)
  loadingOlder: false, // that page is being fetched
};

// What the customer reads when their message started a new conversation because the old one was full.
const FULL_NOTICE = gettext("Your previous conversation reached its maximum length, so this message started a new one. "
  + "Our team can still see the earlier conversation.");

const channel = "BroadcastChannel" in window ? new BroadcastChannel("chat") : null;

let devices = null; // the devices dialogs (devices.js), once wired

function refreshControls() {
  view.updateControls({
    busy: state.busy, sessionId: readSessionId(), handoff: state.handoff, requesting: state.requesting,
  });
  if (devices) devices.refresh(state.busy);
}

function remember(id) {
  storeSessionId(id);
  view.showReference(id);
  refreshControls();
}

function forget() {
  forgetSessionId();
  view.showReference(null);
  refreshControls();
}

function announceChange() {
  if (channel) channel.postMessage({ type: "changed", sessionId: readSessionId() });
}

function setHandoff(next) {
  state.handoff = next;
  if (next !== "waiting") handoffPage.hideEmail(); // a person answered here, or the assistant is back
  view.showHandoff(next, { author: state.author });
  refreshControls();
}

/** Back to the empty page of a browser without a conversation. */
function resetView() {
  state.generation++;
  state.shown = null;
  state.seqs.clear();
  state.floor = -1;
  state.author = null;
  state.othersTurn = false;
  state.before = null;
  view.clearView();
  setHandoff("assistant");
}

// --- Restoring the conversation ----------------------------------------------------

async function loadHistory() {
  const id = readSessionId();
  const loading = ++state.generation;
  state.shown = null; // no polls until the history is in
  view.showReference(id);
  refreshControls();
  if (!id) {
    resetView();
    return;
  }
  let data;
  try {
    data = await api.getHistory(id);
  } catch (error) {
    if (loading !== state.generation) return;
    if (error.status === 404 || error.status === 400) {
      // Unknown, expired or malformed: start afresh (the next message gets a new id).
      if (readSessionId() === id) forget();
      resetView();
    } else if (error.code === "network") {
      view.showNotice(gettext("Could not load your conversation. Check your connection and reload the page."));
    } else if (error.code !== "interrupted") { // cut off: the page is being left or reloaded
      view.showNotice(gettext("Could not load your conversation right now. Reload the page to try again."));
    }
    return;
  }
  if (loading !== state.generation) return;
  if (state.busy) {
    state.refreshWhenIdle = true; // a turn started meanwhile: show the history once it is over
    return;
  }
  resetView();
  renderHistory(data);
  updates.kick();
}

function renderHistory(data) {
  // (A server from before seqs were in the history: positions are the order.)
  const messages = data.messages.map((message, index) => ({ seq: index, ...message }));
  const handoff = data.handoff || "assistant";
  messages.forEach((message, index) => {
    const last = index === messages.length - 1;
    if (message.role === "user") {
      const item = view.addUserMessage(message.content, { message, restored: true });
      const next = messages[index + 1];
      if (!next || next.role !== "assistant") unansweredFromHistory(item, message, last, handoff, data.turnInProgress);
    } else {
      showMessage(message, true);
    }
  });
  state.shown = data.sessionId;
  for (const message of messages) state.seqs.add(message.seq);
  // The newest page only: what lies below it comes by scrolling up, not by the poll.
  if (messages.length) state.floor = messages[0].seq - 1;
  if (!data.turnInProgress) closeGaps();
  setHandoff(handoff);
  if (data.offerEmail) handoffPage.offerEmail(readSessionId);
  followOthersTurn(data.turnInProgress);
  state.before = data.hasMore ? data.before : null;
  view.showEarlier({ more: state.before !== null });
  view.scrollToBottom();
  loadOlderIfInSight();
}

/** The page of older messages, when the customer has scrolled up to the top of the log (or the
 * log does not fill the screen), shown above without moving what they read. */
async function loadOlderIfInSight() {
  if (state.before === null || state.loadingOlder || !view.nearTop()) return;
  const { generation, shown, before } = state;
  state.loadingOlder = true;
  view.showEarlier({ more: true, loading: true });
  let data = null;
  try {
    data = await api.getHistory(shown, undefined, before);
  } catch (error) {
    if (!(error instanceof api.ApiError)) throw error;
  } finally {
    state.loadingOlder = false;
  }
  if (generation !== state.generation || shown !== state.shown) return;
  if (!data) {
    view.showEarlier({ more: true, failed: true });
    return;
  }
  state.before = data.hasMore ? data.before : null;
  view.keepScroll(() => {
    for (const message of data.messages) {
      if (!state.seqs.has(message.seq)) showOlder(message);
    }
    view.showEarlier({ more: state.before !== null });
  });
  loadOlderIfInSight();
}

function showOlder(message) {
  if (message.role !== "user") {
    showMessage(message, true);
    return;
  }
  state.seqs.add(message.seq);
  const item = view.addUserMessage(message.content, { message, restored: true });
  if (message.status === "failed") view.markUnanswered(item, gettext("This message was not answered."), null, state.busy);
}

function unansweredFromHistory(item, message, last, handoff, turnInProgress) {
  if (last && turnInProgress) return; // being answered (in another tab): followOthersTurn shows it typing
  const retry = last && message.clientMessageId && handoff === "assistant"
    ? () => send(message.content, message.clientMessageId, item)
    : null;
  if (message.status === "failed") {
    view.markUnanswered(item, gettext("This message was not answered."), retry, state.busy);
  } else if (last && handoff === "assistant") {
    view.markUnanswered(item, gettext("Not answered."), retry, state.busy);
  }
  // Otherwise it was written to our team (or staff answered after it): nothing is missing.
}

/** A message the server reported, in the log. */
function showMessage(message, restored = false) {
  state.seqs.add(message.seq);
  if (message.role === "user") {
    view.addUserMessage(message.content, { message, restored });
  } else if (message.role === "assistant") {
    view.addAssistantMessage({ text: message.content, stopped: message.status === "stopped", message, restored });
  } else if (message.role === "staff") {
    view.addStaffMessage(message, { restored });
    state.author = message.author || state.author;
  } else if (message.role === "event") {
    view.addEvent(message, { restored });
  }
}

// --- What the long poll brings ---------------------------------------------------

// The poll asks for what is newer than cursor(). Positions are not always
// filled in order: while the assistant writes a reply, its place is kept and a
// staff message may take the next one. So the cursor stays below such a gap
// until no turn is in progress (then the reply has come, or never will).
function cursor() {
  let after = state.floor;
  while (state.seqs.has(after + 1)) after++;
  return after;
}

function closeGaps() {
  for (const seq of state.seqs) state.floor = Math.max(state.floor, seq);
}

const updates = startUpdates({
  position() {
    const sessionId = readSessionId();
    if (!sessionId || sessionId !== state.shown) return null;
    return {
      sessionId, after: cursor(), state: state.handoff,
      generation: state.generation, turnsEnded: state.turnsEnded, busy: state.busy,
    };
  },

  onUpdate(data, asked) {
    if (asked.generation !== state.generation || data.sessionId !== state.shown) return;
    const fresh = data.messages.filter((message) => !state.seqs.has(message.seq)).sort((a, b) => a.seq - b.seq);
    for (const message of fresh) arrived(message);
    if (data.handoff && data.handoff !== state.handoff) setHandoff(data.handoff);
    else if (fresh.some((message) => message.role === "staff")) setHandoff(state.handoff); // the name in the banner
    const current = !state.busy && !asked.busy && asked.turnsEnded === state.turnsEnded;
    if (current && !data.turnInProgress) closeGaps();
    if (current) followOthersTurn(data.turnInProgress);
    refreshControls();
  },

  onGone(asked) {
    if (asked.generation !== state.generation || state.busy) return;
    if (readSessionId() === asked.sessionId) forget();
    resetView();
    view.showNotice(gettext("This conversation is no longer kept in this browser (deleted, ended from another device, "
      + "or expired). Write a message to start a new one."));
  },
});

/** A message the poll reported: one this tab shows already without its seq (its own turn, a reply
 * it waits for), or a new one. */
function arrived(message) {
  if (message.role === "user") {
    const mine = view.pendingQuestion(message.clientMessageId, message.content);
    if (mine) {
      view.setSeq(mine, message.seq);
      state.seqs.add(message.seq);
      return;
    }
  } else if (message.role === "assistant") {
    const waiting = view.firstPending("assistant");
    if (waiting) {
      view.setSeq(waiting, message.seq);
      state.seqs.add(message.seq);
      // This tab's own reply is finished by its stream; another tab's is shown now.
      if (waiting !== state.replyItem) view.finishReply(waiting, message.content, message.status === "stopped");
      return;
    }
  }
  showMessage(message);
}

/** Another tab's turn: its question shows typing until the reply arrives. */
function followOthersTurn(inProgress) {
  if (state.busy) return;
  const placeholder = view.firstPending("assistant");
  const last = view.lastItem();
  if (inProgress && state.handoff === "assistant" && !placeholder && last && last.dataset.role === "user") {
    view.showTyping(view.addAssistantMessage({ pending: true }));
    state.othersTurn = true;
  } else if (!inProgress && state.othersTurn) {
    state.othersTurn = false;
    // It ended without a reply (failed or abandoned): the history says how.
    if (placeholder && view.isTyping(placeholder)) loadHistory();
  }
}

// --- Sending -----------------------------------------------------------------------

function submitFromBox() {
  const text = view.typedText();
  if (!text || state.busy) return;
  const length = [...text].length;
  if (length > view.maxChars) {
    view.showNotice(interpolate(gettext("Messages can be at most %(max)s characters; this one has %(count)s. Please shorten it."), { max: view.maxChars, count: length }));
    return;
  }
  view.clearBox();
  send(text, newClientMessageId(), null);
}

async function send(text, clientMessageId, retryOf) {
  if (state.busy) return;
  state.busy = true;
  state.controller = new AbortController();
  const generation = state.generation;
  view.hideNotice();
  const turn = { text, clientMessageId, retryOf, userItem: retryOf, replyItem: null, started: false };
  if (retryOf && retryOf.isConnected) {
    view.clearUnanswered(retryOf);
    // A reply already shown for it (an interrupted stream) is replaced.
    const next = retryOf.nextElementSibling;
    if (next && next.dataset.role === "assistant") view.removeItem(next);
  } else {
    view.retireRetries();
    turn.userItem = view.addUserMessage(text, { clientMessageId });
  }
  // While a person is asked for or on, the assistant does not answer: no typing dots.
  if (state.handoff === "assistant") {
    turn.replyItem = state.replyItem = view.addAssistantMessage({ pending: true });
    view.showTyping(turn.replyItem);
  }
  refreshControls();
  view.scrollToBottom();
  view.focusBox();

  const outcome = await runTurn(turn, state.controller.signal, generation);

  if (generation === state.generation) finishTurn(turn, outcome);
  state.busy = false;
  state.controller = null;
  state.replyItem = null;
  state.turnsEnded++;
  refreshControls();
  view.refocusBox();
  if (generation === state.generation) announceChange();
  if (state.refreshWhenIdle) {
    state.refreshWhenIdle = false;
    loadHistory();
  } else {
    updates.kick(); // the poll asked while this turn ran: ask afresh
  }
}

function finishTurn(turn, outcome) {
  const { replyItem, userItem } = turn;
  if (outcome.done) {
    const data = outcome.done;
    // The notice (data.notice) is stored as an event too: the poll brings it to the log.
    if (data.handoff && data.handoff !== state.handoff) setHandoff(data.handoff);
    if (data.offerEmail) handoffPage.offerEmail(readSessionId);
    if (typeof data.reply === "string") {
      const item = replyItem || view.addAssistantMessage({ pending: true });
      view.finishReply(item, data.reply, data.stopped);
      if (data.offerPerson) handoffPage.offerPerson(item, askForPerson);
    } else {
      // Stored for our team: sent, and no answer is awaited from the assistant.
      if (replyItem) view.removeItem(replyItem);
      view.markSent(userItem);
    }
  } else if (outcome.stopped && replyItem && view.replyText(replyItem)) {
    view.finishReply(replyItem, view.replyText(replyItem), true);
  } else {
    if (replyItem) view.removeItem(replyItem);
    // A retry over a limit keeps its place (the question is stored): Retry works later.
    if (outcome.rejected && !(outcome.withContact && turn.retryOf)) {
      // Refused before it was stored (too long, invalid, over a limit): give the text back.
      view.removeItem(userItem);
      view.giveTextBack(turn.text);
      view.showNotice(outcome.message, { withContact: outcome.withContact });
    } else {
      const again = () => send(turn.text, turn.clientMessageId, userItem);
      const message = outcome.stopped ? gettext("Stopped before an answer.") : outcome.short || outcome.message;
      view.markUnanswered(userItem, message, again, true);
      if (outcome.withContact) view.showNotice(outcome.message, { withContact: true });
    }
  }
}

// One turn against the API, waiting out another tab's turn a few times.
// Resolves to {done}, {stopped}, {rejected, message} or {message}.
async function runTurn(turn, signal, generation) {
  for (let attempt = 0; ; attempt++) {
    const sentId = readSessionId(); // read before every send: another tab may have changed it
    try {
      const events = api.sendMessage({ text: turn.text, clientMessageId: turn.clientMessageId, sessionId: sentId }, signal);
      for await (const event of events) {
        if (generation !== state.generation) continue;
        if (event.type === "session") {
          adopt(event.sessionId, turn);
          if (event.previousConversationFull) view.showNotice(FULL_NOTICE);
        } else if (event.type === "delta") {
          if (!turn.replyItem) turn.replyItem = state.replyItem = view.addAssistantMessage({ pending: true });
          if (!turn.started) {
            turn.started = true;
            view.startReply(turn.replyItem);
          }
          view.appendReply(turn.replyItem, event.text);
        } else if (event.type === "done") {
          adopt(event.data.sessionId, turn);
          return { done: event.data };
        }
      }
      return { message: gettext("The connection was interrupted before the answer was complete.") };
    } catch (error) {
      if (signal.aborted) return { stopped: true };
      if (!(error instanceof api.ApiError)) throw error;
      if (generation === state.generation && error.sessionId) adopt(error.sessionId, turn);
      // Another tab's turn, or a server too busy to take one more (refused before anything
      // is stored): waited out a few times, while the typing dots show.
      if (["turn_in_progress", "overloaded"].includes(error.code) && attempt < BUSY_RETRIES) {
        if (await sleep(Math.min(error.retryAfter || 2, 5) * 1000, signal)) continue;
        return { stopped: true };
      }
      return outcomeOf(error);
    }
  }
}

function outcomeOf(error) {
  if (error.code === "turn_in_progress") {
    return { message: gettext("This conversation is still answering a message from another tab. Try again in a moment.") };
  }
  if (["invalid_message", "message_too_long", "retry_superseded"].includes(error.code)) {
    return { rejected: true, message: error.message };
  }
  if (error.status === 429 || error.code === "budget_exhausted") {
    return { rejected: true, withContact: true, short: gettext("Not sent: over the limit for now."), message: limitMessage(error) };
  }
  if (error.code === "invalid_session_id") forget();
  return { message: error.message };
}

/** What a customer over a limit reads: why, when to come back, in words, and who else can help. */
function limitMessage(error) {
  const when = view.inAbout(error.retryAfter);
  if (error.code === "budget_exhausted") {
    const text = error.status === 503
      ? gettext("The assistant has answered all it can today. Please try again %(when)s, "
        + "or press Talk to a person to ask someone from our team. You can also reach us directly:")
      : gettext("The assistant has answered all it can for this conversation today. Please try again %(when)s, "
        + "or press Talk to a person to ask someone from our team. You can also reach us directly:");
    return interpolate(text, { when });
  }
  return interpolate(gettext("You have sent a lot of messages in a short time. Please try again %(when)s. "
    + "If it cannot wait, you can reach us directly:"), { when });
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(true), ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(false);
    }, { once: true });
  });
}

// A response carrying a different session id than the one stored starts (or
// moves to) another conversation: the messages shown from the old one go.
function adopt(id, turn) {
  if (!isSessionId(id) || (id === readSessionId() && id === state.shown)) return;
  if (id !== state.shown) {
    view.keepOnly([turn.userItem, turn.replyItem].filter(Boolean));
    state.shown = id;
    state.seqs.clear();
    state.floor = -1;
    state.author = null;
    state.before = null;
    view.showEarlier({ more: false });
    setHandoff("assistant");
  }
  remember(id);
  updates.kick();
}

// --- Asking for a person -------------------------------------------------------

async function askForPerson() {
  if (state.busy || state.requesting) return;
  state.requesting = true;
  refreshControls();
  view.hideNotice();
  try {
    let sentId = readSessionId();
    let data;
    try {
      data = await api.requestHandoff(sentId);
    } catch (error) {
      if (!(sentId && error.code === "session_not_found")) throw error;
      // Expired meanwhile: a person can still be asked for, in a new conversation.
      forget();
      resetView();
      sentId = null;
      data = await api.requestHandoff(null);
    }
    if (data.sessionId !== state.shown) {
      resetView();
      state.shown = data.sessionId;
    }
    if (data.previousConversationFull) view.showNotice(FULL_NOTICE);
    remember(data.sessionId);
    setHandoff(data.handoff); // its notice comes to the log as an event, by the poll
    if (data.offerEmail) handoffPage.offerEmail(readSessionId);
    announceChange();
    updates.kick();
  } catch (error) {
    if (!(error instanceof api.ApiError)) throw error;
    if (error.status === 429) {
      view.showNotice(interpolate(gettext("We cannot take the request right now. Please try again %(when)s, or reach us directly:"), { when: view.inAbout(error.retryAfter) }), { withContact: true });
    } else {
      view.showNotice(interpolate(gettext("Could not ask for a person: %(error)s You can also reach us directly:"), { error: error.message }), { withContact: true });
    }
  } finally {
    state.requesting = false;
    refreshControls();
    view.focusBox();
  }
}

// --- Conversation controls ---------------------------------------------------------

function stopTurn() {
  if (state.controller) state.controller.abort();
}

function startNewConversation() {
  stopTurn();
  forget();
  resetView();
  view.focusBox();
  announceChange();
}

async function deleteConversation() {
  const id = readSessionId();
  if (!id || state.busy) return;
  if ((await view.confirmDelete()) !== "delete") {
    view.controls.deleteButton.focus();
    return;
  }
  try {
    await api.deleteConversation(id);
  } catch (error) {
    if (!(error instanceof api.ApiError)) throw error;
    view.showNotice(error.code === "network"
      ? gettext("Could not reach the server, so nothing was deleted. Try again in a moment.")
      : interpolate(gettext("Could not delete the conversation: %(error)s"), { error: error.message }));
    return;
  }
  if (readSessionId() === id) forget();
  resetView();
  view.focusBox();
  announceChange();
}

// --- Wiring ----------------------------------------------------------------------------

const { form, box, stopButton, newButton, deleteButton, handoffButton, suggestions } = view.controls;

form.addEventListener("submit", (event) => {
  event.preventDefault();
  submitFromBox();
});

box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault(); // also while busy: a held Enter neither sends twice nor adds lines
    submitFromBox();
  }
});
box.addEventListener("input", view.resizeBox);
view.onScroll(loadOlderIfInSight);

stopButton.addEventListener("click", () => {
  stopTurn();
  view.focusBox();
});
newButton.addEventListener("click", startNewConversation);
deleteButton.addEventListener("click", deleteConversation);
handoffButton.addEventListener("click", askForPerson);

for (const button of suggestions) {
  button.addEventListener("click", () => {
    if (!state.busy) send(button.textContent.trim(), newClientMessageId(), null);
  });
}

// Another tab stored a different id (or forgot it): follow it.
window.addEventListener("storage", (event) => {
  if (event.key !== KEY && event.key !== null) return;
  if (state.busy) state.refreshWhenIdle = true;
  else loadHistory();
});

// Another tab finished a turn (or asked for a person) on the same conversation: show it here at once.
if (channel) {
  channel.addEventListener("message", (event) => {
    const message = event.data || {};
    if (message.type !== "changed" || message.sessionId !== readSessionId()) return;
    if (state.busy) state.refreshWhenIdle = true;
    else loadHistory();
  });
}

devices = startDevices({
  sessionId: readSessionId,
  joined(id) { // this browser now has its own session in the conversation of another device
    stopTurn();
    remember(id);
    announceChange();
    loadHistory();
  },
  ended() { // "Not you?": this browser's session has ended; the conversation stays for the others
    stopTurn();
    forget();
    resetView();
    view.showNotice(gettext("This browser has left the conversation. Write a message to start a new one."));
    announceChange();
  },
});

refreshControls();
// The customer chose another language than this page's: it is loaded again in it, nothing to start here.
if (!reloadingForChoice()) loadHistory();
// Ready to type at once, except on touch screens, where focus would pop up the keyboard.
if (window.matchMedia("(pointer: fine)").matches) view.focusBox();
