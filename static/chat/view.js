// The page: everything that reads or changes the DOM. It builds nodes with
// createElement and textContent only (and markdown.js, which does the same),
// never innerHTML: what customers, the model and staff write stays text.
//
// Every message shown is an item in #log with data-role (user, assistant,
// staff, event) and, once the server has told its position, data-seq. Items
// without data-seq are this tab's own turn in flight (or a reply another tab
// is waiting for); main.js matches them to the server's messages.

import { renderMarkdown } from "../markdown.js";
import { gettext, interpolate } from "./translation.js";

const $ = (id) => document.getElementById(id);

const conversation = $("conversation");
const log = $("log");
const welcome = $("welcome");
const notice = $("notice");
const reference = $("reference");
const referenceId = $("reference-id");
const box = $("message");
const sendButton = $("send");
const stopButton = $("stop");
const deleteButton = $("delete-conversation");
const handoffButton = $("handoff-request");
const handoffStatus = $("handoff-status");
const handoffTitle = $("handoff-title");
const handoffText = $("handoff-text");
const confirmDialog = $("confirm-delete");
const contact = $("shop-contact");

export const controls = {
  form: $("composer"),
  box,
  stopButton,
  newButton: $("new-conversation"),
  deleteButton,
  handoffButton,
  suggestions: [...document.querySelectorAll(".suggestion")],
};

export const maxChars = parseInt(box.dataset.maxChars, 10) || 4000;

const PLACEHOLDER = box.placeholder;
const CHAT_ICON = ["M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.6A8 8 0 1 1 21 12Z"];

// --- Building blocks -----------------------------------------------------------

function svg(paths, size) {
  const ns = "http://www.w3.org/2000/svg";
  const node = document.createElementNS(ns, "svg");
  for (const [name, value] of Object.entries({
    viewBox: "0 0 24 24", width: size, height: size, fill: "none", stroke: "currentColor",
    "stroke-width": "2", "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true",
  })) node.setAttribute(name, value);
  for (const d of paths) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    node.appendChild(path);
  }
  return node;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A message's bubble: dir="auto", so that a message in Arabic or Hebrew reads right to left in an
 * English page, and an English one left to right in an Arabic page. */
function bubbleOf(tag, text) {
  const bubble = element(tag, "bubble", text);
  bubble.dir = "auto";
  return bubble;
}

export function nearBottom() {
  return conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 120;
}

export function scrollToBottom() {
  conversation.scrollTop = conversation.scrollHeight;
}

function updateEmptyState() {
  welcome.hidden = log.children.length > 0;
}

export function clearView() {
  log.replaceChildren();
  showEarlier({ more: false });
  updateEmptyState();
  hideNotice();
}

// --- Older pages of a long conversation -------------------------------------------

const earlier = $("earlier");

/** Runs `change` (messages added above) so that what the customer reads stays where it was. */
export function keepScroll(change) {
  const fromBottom = conversation.scrollHeight - conversation.scrollTop;
  change();
  conversation.scrollTop = conversation.scrollHeight - fromBottom;
}

/** The line above the log: there only while older messages remain, its text while they load. */
export function showEarlier({ more, loading = false, failed = false }) {
  earlier.hidden = !more;
  earlier.classList.toggle("idle", !loading && !failed);
  earlier.textContent = failed ? gettext("Could not load earlier messages. Scroll up to try again.") : gettext("Loading earlier messages…");
}

/** Whether the top of the conversation is in sight (or nearly), so older messages are wanted. */
export function nearTop() {
  return conversation.scrollTop < 200;
}

/** Calls `handler` when the customer scrolls the conversation. */
export function onScroll(handler) {
  conversation.addEventListener("scroll", handler, { passive: true });
}

// --- Messages ------------------------------------------------------------------

function messageItem(role, message, restored) {
  const item = element("div", restored ? "message" : "message enter");
  item.dataset.role = role;
  if (message && Number.isInteger(message.seq)) item.dataset.seq = String(message.seq);
  return item;
}

/** Puts a new item in the log in seq order; this tab's items still in flight (no seq) stay last. */
function place(item, { last = false } = {}) {
  const seq = item.dataset.seq === undefined ? Infinity : Number(item.dataset.seq);
  let before = null;
  if (!last) {
    for (const other of log.children) {
      if (other.dataset.seq === undefined ? !("settled" in other.dataset) : Number(other.dataset.seq) > seq) {
        before = other;
        break;
      }
    }
  }
  const stick = nearBottom();
  log.insertBefore(item, before);
  updateEmptyState();
  if (stick) scrollToBottom();
  return item;
}

/** A question; `clientMessageId` marks this tab's own, until the server reports its seq. */
export function addUserMessage(text, { message = null, restored = false, clientMessageId = null } = {}) {
  const item = messageItem("user", message, restored);
  if (clientMessageId) item.dataset.clientMessageId = clientMessageId;
  item.appendChild(bubbleOf("div", text)); // plain text, always
  return place(item, { last: Boolean(clientMessageId) });
}

/** An assistant reply; without `text`, an empty one that a turn fills in. */
export function addAssistantMessage({ text, stopped = false, message = null, restored = false, pending = false } = {}) {
  const item = messageItem("assistant", message, restored);
  const avatar = element("span", "avatar");
  avatar.appendChild(svg(CHAT_ICON, 16));
  avatar.setAttribute("aria-hidden", "true");
  const body = element("div", "message-body");
  const bubble = bubbleOf("div");
  const content = element("div", "markdown");
  bubble.appendChild(content);
  const meta = element("div", "message-meta");
  body.append(bubble, meta);
  item.append(avatar, body);
  item.reply = { text: "", content, meta, frame: 0 };
  if (text !== undefined) finishReply(item, text, stopped);
  return place(item, { last: pending });
}

export function addStaffMessage(message, { restored = false } = {}) {
  const item = messageItem("staff", message, restored);
  const name = message.author || gettext("Our team");
  const avatar = element("span", "avatar staff-avatar", [...name.trim()][0] || "?");
  avatar.setAttribute("aria-hidden", "true");
  const body = element("div", "message-body");
  const header = element("div", "message-author");
  const authorName = element("span", "author", name);
  authorName.dir = "auto";
  header.append(authorName, element("span", "staff-badge", gettext("Staff")));
  const bubble = bubbleOf("div");
  const content = element("div", "markdown");
  content.appendChild(renderMarkdown(message.content));
  bubble.appendChild(content);
  body.append(header, bubble);
  item.append(avatar, body);
  return place(item);
}

export function addEvent(message, { restored = false } = {}) {
  const item = messageItem("event", message, restored);
  item.appendChild(bubbleOf("p", message.content));
  return place(item);
}

/** Gives an item shown before its seq was known the server's seq. */
export function setSeq(item, seq) {
  item.dataset.seq = String(seq);
}

/** The oldest item of `role` waiting for its seq (this tab's turn, or a reply being waited for). */
export function firstPending(role) {
  return log.querySelector(`:scope > [data-role="${role}"]:not([data-seq]):not([data-settled])`);
}

/** This tab's question with that clientMessageId (else that text) still waiting for its seq. */
export function pendingQuestion(clientMessageId, text) {
  const waiting = [...log.querySelectorAll(':scope > [data-role="user"]:not([data-seq])')];
  return waiting.find((item) => clientMessageId && item.dataset.clientMessageId === clientMessageId)
    || waiting.find((item) => !("settled" in item.dataset) && userText(item) === text)
    || null;
}

export function lastItem() {
  return log.lastElementChild;
}

export function userText(item) {
  return item.querySelector(".bubble").textContent;
}

export function showTyping(item) {
  const dots = element("span", "typing");
  dots.setAttribute("aria-label", gettext("The assistant is typing"));
  dots.setAttribute("role", "img");
  dots.append(element("span"), element("span"), element("span"));
  item.reply.content.replaceChildren(dots);
  item.classList.add("streaming");
}

export function isTyping(item) {
  return Boolean(item.reply && item.reply.content.querySelector(".typing"));
}

/** The first words of a reply replace the typing dots. */
export function startReply(item) {
  item.reply.content.replaceChildren();
}

// Deltas can come faster than frames: render at most once per frame.
export function appendReply(item, piece) {
  const reply = item.reply;
  reply.text += piece;
  if (reply.frame) return;
  reply.frame = requestAnimationFrame(() => {
    reply.frame = 0;
    const stick = nearBottom();
    reply.content.replaceChildren(renderMarkdown(reply.text));
    if (stick) scrollToBottom();
  });
}

export function replyText(item) {
  return item.reply.text;
}

export function finishReply(item, text, stopped) {
  if (item.reply.frame) cancelAnimationFrame(item.reply.frame);
  item.reply.frame = 0;
  item.classList.remove("streaming");
  item.reply.text = text;
  item.reply.content.replaceChildren(renderMarkdown(text));
  const meta = item.reply.meta;
  meta.replaceChildren();
  if (stopped) {
    const badge = element("span", "badge", gettext("Stopped"));
    badge.title = gettext("You stopped this reply; the part written so far is kept.");
    meta.appendChild(badge);
  }
  meta.appendChild(copyButton(item));
}

function copyButton(item) {
  const button = element("button", "icon-button copy-button");
  button.type = "button";
  const label = element("span", "", gettext("Copy"));
  button.append(svg(["M9 9h10v10H9z", "M5 15V5h10"], 14), label);
  button.addEventListener("click", async () => {
    const copied = await copyText(item.reply.text);
    label.textContent = copied ? gettext("Copied") : gettext("Copy failed");
    button.classList.add("copied");
    setTimeout(() => {
      label.textContent = gettext("Copy");
      button.classList.remove("copied");
    }, 1600);
  });
  return button;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (error) {
    // No async clipboard (plain http on another host): the old way.
    const scratch = element("textarea");
    scratch.value = text;
    scratch.setAttribute("readonly", "");
    scratch.className = "visually-hidden";
    document.body.appendChild(scratch);
    scratch.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (ignored) {
      ok = false;
    }
    scratch.remove();
    return ok;
  }
}

export function removeItem(item) {
  item.remove();
  updateEmptyState();
}

/** Removes every item but `keep` (a response started a different conversation). */
export function keepOnly(keep) {
  for (const item of [...log.children]) if (!keep.includes(item)) item.remove();
  updateEmptyState();
}

/** A message kept for staff: no answer is awaited, it is simply sent. */
export function markSent(item) {
  if (item.querySelector(".sent-mark")) return;
  const mark = element("span", "sent-mark", gettext("Sent"));
  mark.title = gettext("Kept for our team; they answer here.");
  const stick = nearBottom();
  item.appendChild(mark);
  if (stick) scrollToBottom();
}

// Says under a question that it was not answered, and offers Retry if `retry` is given.
export function markUnanswered(userItem, message, retry, busy) {
  clearUnanswered(userItem);
  const row = element("div", "turn-error");
  row.setAttribute("role", "alert");
  row.appendChild(element("span", "", message));
  if (retry) {
    const button = element("button", "retry-button", gettext("Retry"));
    button.type = "button";
    button.disabled = busy;
    button.addEventListener("click", retry);
    row.appendChild(button);
  }
  userItem.appendChild(row);
  userItem.classList.add("unanswered");
}

export function clearUnanswered(userItem) {
  const row = userItem.querySelector(".turn-error");
  if (row) row.remove();
  userItem.classList.remove("unanswered");
}

// Once a newer question is sent, an older unanswered one can no longer be retried.
export function retireRetries() {
  for (const button of log.querySelectorAll(".retry-button")) {
    const row = button.parentElement;
    if (row.parentElement.dataset.seq === undefined) row.parentElement.dataset.settled = "";
    button.remove();
    row.removeAttribute("role");
    row.firstChild.textContent = gettext("Not answered.");
  }
}

// --- Notices, the handoff banner, controls --------------------------------------

/** A wait in words: "in a few seconds", "in about a minute", "in about 21 minutes", "in about 5 hours". */
export function inAbout(seconds) {
  if (!(seconds > 0)) return gettext("in a moment");
  if (seconds < 30) return gettext("in a few seconds");
  if (seconds < 90) return gettext("in about a minute");
  if (seconds < 55 * 60) return interpolate(gettext("in about %(count)s minutes"), { count: Math.round(seconds / 60) });
  if (seconds < 90 * 60) return gettext("in about an hour");
  return interpolate(gettext("in about %(count)s hours"), { count: Math.round(seconds / 3600) });
}

/** A problem, in words, above the text box; with `withContact`, the shop's contact details after it. */
export function showNotice(message, { withContact = false } = {}) {
  notice.replaceChildren(element("span", "", message));
  const details = contactDetails();
  if (withContact && details) notice.appendChild(element("span", "notice-contact", details));
  notice.hidden = false;
}

export function hideNotice() {
  notice.hidden = true;
  notice.replaceChildren();
}

/** The shop's opening hours, email and phone as the page was given them ("" if none). */
function contactDetails() {
  return contact ? contact.textContent.trim() : "";
}

/**
 * Who answers: nothing shown while it is the assistant; otherwise a banner that
 * says plainly that the customer is waiting for a person, or talking to one.
 * (The notice with the hours and contact details is in the log, as an event.)
 */
export function showHandoff(state, { author = null } = {}) {
  handoffStatus.dataset.state = state;
  handoffStatus.hidden = state === "assistant";
  if (state === "assistant") {
    box.placeholder = PLACEHOLDER;
    return;
  }
  if (state === "staff") {
    handoffTitle.textContent = author ? interpolate(gettext("You are talking to %(name)s"), { name: author })
      : gettext("You are talking to a person from our team");
    handoffText.textContent = gettext("They answer here. The assistant stays quiet until they hand you back.");
  } else {
    handoffTitle.textContent = gettext("Waiting for a person from our team");
    handoffText.textContent = gettext("They answer here. Keep writing if you like: your messages are kept for them.");
  }
  box.placeholder = gettext("Write to our team…");
}

export function showReference(id) {
  reference.hidden = !id;
  referenceId.textContent = id ? id.slice(0, 8) : "";
  reference.title = id ? gettext("Read this out to our support staff if you contact us") : "";
}

export function updateControls({ busy, sessionId, handoff, requesting }) {
  sendButton.disabled = busy;
  stopButton.hidden = !busy;
  deleteButton.disabled = busy || !sessionId;
  handoffButton.disabled = busy || requesting;
  handoffButton.hidden = handoff !== "assistant";
  log.setAttribute("aria-busy", busy ? "true" : "false");
  for (const button of log.querySelectorAll(".retry-button")) button.disabled = busy;
}

export function confirmDelete() {
  if (typeof confirmDialog.showModal !== "function") {
    return Promise.resolve(window.confirm(gettext("Delete this conversation? This cannot be undone.")) ? "delete" : "cancel");
  }
  return new Promise((resolve) => {
    confirmDialog.returnValue = "";
    confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue), { once: true });
    confirmDialog.showModal();
  });
}

// --- The text box ----------------------------------------------------------------

const autoSized = window.CSS && CSS.supports && CSS.supports("field-sizing", "content");

export function resizeBox() {
  if (autoSized) return;
  box.style.height = "auto";
  box.style.height = Math.min(box.scrollHeight, 200) + "px";
}

/** The typed text, trimmed; the box is emptied only by `clearBox`. */
export function typedText() {
  return box.value.trim();
}

export function clearBox() {
  box.value = "";
  resizeBox();
}

/** A message refused before it was stored goes back into the box (unless something new was typed). */
export function giveTextBack(text) {
  if (!box.value.trim()) box.value = text;
  resizeBox();
}

export function focusBox() {
  box.focus();
}

/** Focus back to the box unless the customer has moved on to another control. */
export function refocusBox() {
  const active = document.activeElement;
  if (!active || active === document.body || active === stopButton) box.focus();
}
