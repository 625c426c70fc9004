// The chat page inside a shop's page: the frame that static/widget.js opens.
//
// The shop's page keeps the sessionId (in its own localStorage: this frame's
// storage is partitioned or wiped by the browsers) and hands it over in its
// first message; this frame keeps it in memory and hands every new one back.
// Only then does main.js start, exactly as on the chat's own page.
//
// Messages both ways are {type: "shopchat:<name>", ...}. This frame answers only
// its parent window, and only from an origin of CHAT_EMBED_ORIGINS (the meta
// tag); once the parent has spoken, only from that origin, and it writes to
// that origin alone. Anything else (another frame, another origin, another
// shape) is ignored.
//
//   parent -> frame  init    {sessionId: id|null, remembered: bool, open: bool, greeting: string|null}
//                    session {sessionId: id|null}   the shop's other tab changed it
//                    open    {open: bool}           the panel was opened (take the focus) or closed
//   frame -> parent  ready   {}                     init was taken: the chat is up
//                    session {sessionId: id|null}   the server issued one, or it was forgotten
//                    arrived {}                     a reply or a staff message came in
//                    close   {}                     Escape or the close button

import { isSessionId, keepInHost, takeFromHost } from "./session.js";
import { gettext } from "./translation.js";

const PREFIX = "shopchat:";
const allowed = (document.querySelector('meta[name="chat-embed-origins"]').content || "").split(" ").filter(Boolean);

let host = null; // the parent's origin, once its init was taken
let open = false;

// Nothing can be sent before main.js runs: the box takes no typing until then.
const composer = document.getElementById("composer");
composer.inert = true;

function post(type, data = {}) {
  window.parent.postMessage({ ...data, type: PREFIX + type }, host);
}

const shapes = {
  init: (m) => isIdOrNull(m.sessionId) && typeof m.remembered === "boolean" && typeof m.open === "boolean"
    && (m.greeting === null || (typeof m.greeting === "string" && m.greeting.length <= 200)),
  session: (m) => isIdOrNull(m.sessionId),
  open: (m) => typeof m.open === "boolean",
};

function isIdOrNull(value) {
  return value === null || isSessionId(value);
}

window.addEventListener("message", (event) => {
  if (event.source !== window.parent || window.parent === window) return;
  if (host ? event.origin !== host : !(allowed.includes(event.origin) || allowed.includes("*"))) return;
  const message = event.data;
  if (!message || typeof message !== "object" || typeof message.type !== "string") return;
  const type = message.type.startsWith(PREFIX) ? message.type.slice(PREFIX.length) : "";
  if (!Object.hasOwn(shapes, type) || !shapes[type](message)) return;
  if (type === "init") {
    if (!host) start(event.origin, message);
  } else if (!host) {
    return;
  } else if (type === "session") {
    takeFromHost(message.sessionId);
  } else if (type === "open") {
    open = message.open;
    if (open) focusBox();
  }
});

async function start(origin, { sessionId, remembered, greeting, open: opened }) {
  host = origin;
  open = opened;
  keepInHost(sessionId, (id) => post("session", { sessionId: id }));
  if (greeting) document.getElementById("welcome-title").textContent = greeting;
  if (!remembered) showNotRemembered();
  addCloseButton();
  await import("./main.js");
  composer.inert = false;
  watchArrivals();
  post("ready");
}

function focusBox() {
  // On a touch screen focus would pop up the keyboard over the shop's page.
  if (!window.matchMedia("(pointer: fine)").matches) return;
  const box = document.getElementById("message");
  box.focus();
  // A frame the browser has not focused yet may refuse focus(): take it when the frame gets it.
  if (!document.hasFocus()) {
    window.addEventListener("focus", () => {
      if (open && document.activeElement !== box) box.focus();
    }, { once: true });
  }
}

function showNotRemembered() {
  const note = document.createElement("p");
  note.className = "embed-note";
  note.setAttribute("role", "note");
  note.textContent = gettext("This browser does not let the chat keep your conversation: it is forgotten when you leave this page.");
  document.querySelector(".composer-wrap").prepend(note);
}

function addCloseButton() {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "ghost-button embed-close";
  button.setAttribute("aria-label", gettext("Close the chat"));
  button.title = gettext("Close the chat");
  const ns = "http://www.w3.org/2000/svg";
  const icon = document.createElementNS(ns, "svg");
  for (const [name, value] of Object.entries({
    viewBox: "0 0 24 24", width: "18", height: "18", fill: "none", stroke: "currentColor",
    "stroke-width": "2", "stroke-linecap": "round", "aria-hidden": "true",
  })) icon.setAttribute(name, value);
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M6 6l12 12M18 6 6 18");
  icon.appendChild(path);
  button.appendChild(icon);
  button.addEventListener("click", () => post("close"));
  document.querySelector(".topbar-actions").appendChild(button);
}

document.addEventListener("keydown", (event) => {
  // Escape in the delete confirmation closes that dialog, not the chat.
  if (event.key === "Escape" && host && !document.querySelector("dialog[open]")) post("close");
});

// A reply or a staff message that comes in while the panel is closed lights the launcher's
// badge. New items are the ones view.js animates in ("enter"); restored history is not new.
// A reply counts when it is finished (no longer "streaming").
function watchArrivals() {
  const counts = (node) => node.dataset && (node.dataset.role === "staff" || node.dataset.role === "assistant")
    && node.classList.contains("enter") && !node.classList.contains("streaming");
  new MutationObserver((records) => {
    if (open) return;
    for (const record of records) {
      const arrived = record.type === "childList"
        ? [...record.addedNodes].some(counts)
        : record.oldValue && record.oldValue.includes("streaming") && counts(record.target);
      if (arrived) post("arrived");
    }
  }).observe(document.getElementById("log"), {
    childList: true, attributes: true, attributeFilter: ["class"], attributeOldValue: true, subtree: true,
  });
}

// Opened on its own (not in a frame): that is the chat's own page.
if (window.parent === window) location.replace("/");
