/* The chat on a shop's own pages: a launcher button and a panel that frames /embed.
 *
 *   <script src="https://CHAT-SITE/static/widget.js" async
 *           data-position="left" data-color="#0f766e" data-greeting="Hi! Questions about your order?"></script>
 *
 * docs/embed.md is the shop's guide. What this file promises:
 * - The sessionId lives in this (the shop's) page's localStorage under "shopchat:sessionId" and is
 *   handed to the frame by postMessage; the frame hands each new one back. Nobody here makes one
 *   up: only the server issues them. If storage throws, the id lives in memory for this page, and
 *   the frame says the conversation will not be remembered.
 * - Messages go to the chat's exact origin, and only the frame's own window at that origin is
 *   listened to. static/chat/embed.js lists the messages.
 * - The frame is loaded on the first open, or when the page is idle if there is a conversation
 *   to follow (for the unread badge). Nothing else is loaded.
 * - One global, window.ShopChat ({open, close}); the few styles live in a shadow root.
 */
(() => {
  "use strict";
  const script = document.currentScript;
  if (window.ShopChat || !script || !script.src) return;

  const chat = new URL(script.src).origin;
  const PREFIX = "shopchat:";
  const ID_KEY = PREFIX + "sessionId"; // localStorage: the conversation, kept across visits
  const OPEN_KEY = PREFIX + "open"; // sessionStorage: the panel open, across this tab's pages
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
  const options = script.dataset;
  const color = options.color && CSS.supports("color", options.color) ? options.color : "#4f46e5";
  const greeting = options.greeting ? options.greeting.slice(0, 200) : null;
  // The shop's page's language (<html lang>): the chat in the frame speaks it, unless the customer
  // chose another there. The launcher's few words are here, not in the chat's catalogs (locale/),
  // which this page does not load: one line per language of settings.LANGUAGES (docs/i18n.md).
  const lang = (document.documentElement.lang || "").trim().slice(0, 35);
  const LABELS = {
    en: ["Chat with us", "Chat with us (%s new)"],
    de: ["Chatten Sie mit uns", "Chatten Sie mit uns (%s neu)"],
    fr: ["Discutez avec nous", "Discutez avec nous (%s nouveaux)"],
    es: ["Chatea con nosotros", "Chatea con nosotros (%s nuevos)"],
    ar: ["تحدث معنا", "تحدث معنا (%s جديدة)"],
  };
  const [label, labelUnread] = LABELS[lang.toLowerCase().split(/[-_]/)[0]] || LABELS.en;

  // --- The session id, in the shop's storage ---------------------------------------

  let memoryId = null;
  let remembered = true;
  try {
    localStorage.setItem(PREFIX + "test", "1");
    localStorage.removeItem(PREFIX + "test");
  } catch (error) {
    remembered = false; // blocked (cookies off, some private modes): this visit only
  }

  function readId() {
    let id = memoryId;
    if (remembered) {
      try {
        id = localStorage.getItem(ID_KEY);
      } catch (error) { /* memoryId */ }
    }
    return typeof id === "string" && UUID.test(id) ? id : null;
  }

  function storeId(id) {
    memoryId = id;
    if (!remembered) return;
    try {
      if (id) localStorage.setItem(ID_KEY, id);
      else localStorage.removeItem(ID_KEY);
    } catch (error) { /* memoryId */ }
  }

  function session(name, value) {
    try {
      if (value === undefined) return sessionStorage.getItem(name);
      sessionStorage.setItem(name, value);
    } catch (error) { /* not remembered across pages */ }
    return null;
  }

  // --- The launcher and the panel, in a shadow root --------------------------------

  const CSS_TEXT = `
:host{all:initial!important;--c:${color}}
*{box-sizing:border-box}
.launcher{position:fixed;bottom:20px;${options.position === "left" ? "left" : "right"}:20px;z-index:2147483000;
width:56px;height:56px;border:0;border-radius:50%;background:var(--c);color:#fff;cursor:pointer;padding:0;
display:grid;place-items:center;box-shadow:0 4px 14px rgba(0,0,0,.25)}
.launcher:focus-visible{outline:3px solid var(--c);outline-offset:3px}
.badge{position:absolute;top:-4px;right:-4px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;
background:#d92d3a;color:#fff;font:600 12px/22px system-ui,sans-serif;text-align:center}
.panel{position:fixed;bottom:88px;${options.position === "left" ? "left" : "right"}:20px;z-index:2147483000;
width:380px;height:min(640px,calc(100vh - 108px));border-radius:16px;overflow:hidden;background:#fff;
box-shadow:0 8px 40px rgba(0,0,0,.28);color-scheme:light dark}
.panel.closed{visibility:hidden;pointer-events:none}
iframe{border:0;width:100%;height:100%;display:block}
[hidden]{display:none!important}
@media (prefers-color-scheme:dark){.panel{background:#111318}.launcher{box-shadow:0 4px 14px rgba(0,0,0,.6)}}
@media (max-width:520px){.panel{inset:0;width:100%;height:100%;border-radius:0}.open .launcher{display:none}}`;

  const host = document.createElement("shopchat-widget");
  const root = host.attachShadow({ mode: "open" });
  try {
    const sheet = new CSSStyleSheet(); // not subject to the shop's style-src: no inline <style>
    sheet.replaceSync(CSS_TEXT);
    root.adoptedStyleSheets = [sheet];
  } catch (error) {
    const style = document.createElement("style");
    style.textContent = CSS_TEXT;
    root.appendChild(style);
  }
  const box = document.createElement("div");
  const launcher = document.createElement("button");
  launcher.type = "button";
  launcher.className = "launcher";
  launcher.setAttribute("aria-expanded", "false");
  launcher.appendChild(chatIcon());
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.hidden = true;
  badge.setAttribute("aria-hidden", "true");
  launcher.appendChild(badge);
  const panel = document.createElement("div");
  panel.className = "panel closed";
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", label);
  box.append(panel, launcher);
  root.appendChild(box);

  function chatIcon() {
    const ns = "http://www.w3.org/2000/svg";
    const icon = document.createElementNS(ns, "svg");
    for (const [name, value] of Object.entries({
      viewBox: "0 0 24 24", width: "26", height: "26", fill: "none", stroke: "currentColor",
      "stroke-width": "1.8", "stroke-linejoin": "round", "aria-hidden": "true",
    })) icon.setAttribute(name, value);
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", "M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.6A8 8 0 1 1 21 12Z");
    icon.appendChild(path);
    return icon;
  }

  // --- The frame and its messages ----------------------------------------------------

  let frame = null;
  let ready = false;
  let isOpen = false;
  let unread = 0;
  let warned = false;
  let helloTimer = 0;
  let focusWhenReady = false; // opened by the customer before the chat was up

  // Before "ready" only init is sent: the frame may be the browser's error page (the chat refused
  // to be framed here), which would have the browser log every message as misaddressed.
  function post(type, data) {
    if (frame && (ready || type === "init")) frame.contentWindow.postMessage({ ...data, type: PREFIX + type }, chat);
  }

  function load() {
    if (frame) return;
    frame = document.createElement("iframe");
    frame.title = label;
    frame.src = chat + "/embed" + (lang ? "?lang=" + encodeURIComponent(lang) : "");
    frame.allow = "clipboard-write";
    frame.addEventListener("load", () => {
      ready = false;
      post("init", { sessionId: readId(), remembered, open: isOpen, greeting });
      clearTimeout(helloTimer);
      // A frame the chat refused (this origin is not in CHAT_EMBED_ORIGINS) loads an error page that never answers.
      helloTimer = setTimeout(() => {
        if (ready || warned) return;
        warned = true;
        console.warn(`Shop chat: ${chat} did not answer. Is ${location.origin} in its CHAT_EMBED_ORIGINS? (docs/embed.md)`);
      }, 5000);
    });
    panel.appendChild(frame);
  }

  window.addEventListener("message", (event) => {
    if (!frame || event.source !== frame.contentWindow || event.origin !== chat) return;
    const message = event.data;
    if (!message || typeof message !== "object" || typeof message.type !== "string") return;
    if (!message.type.startsWith(PREFIX)) return;
    const type = message.type.slice(PREFIX.length);
    if (type === "ready") {
      ready = true;
      if (focusWhenReady && isOpen) post("open", { open: true }); // the frame moves focus to its message box
      focusWhenReady = false;
    } else if (type === "session" && (message.sessionId === null || UUID.test(message.sessionId))) {
      storeId(message.sessionId);
    } else if (type === "arrived" && !isOpen) {
      unread++;
      showUnread();
    } else if (type === "close") {
      close(true);
    }
  });

  // The shop's page open in another tab changed the conversation: this frame follows it.
  window.addEventListener("storage", (event) => {
    if (event.key === ID_KEY || event.key === null) post("session", { sessionId: readId() });
  });

  function showUnread() {
    badge.hidden = unread === 0;
    badge.textContent = unread > 9 ? "9+" : String(unread);
    launcher.setAttribute("aria-label", unread ? labelUnread.replace("%s", String(unread)) : label);
  }

  function open(focus) {
    load();
    isOpen = true;
    panel.classList.remove("closed");
    box.classList.add("open");
    launcher.setAttribute("aria-expanded", "true");
    unread = 0;
    showUnread();
    session(OPEN_KEY, "1");
    if (focus) frame.focus(); // first, so that the frame has the focus when it moves it to its message box
    post("open", { open: true });
    focusWhenReady = focus && !ready;
  }

  function close(focus) {
    isOpen = false;
    panel.classList.add("closed");
    box.classList.remove("open");
    launcher.setAttribute("aria-expanded", "false");
    session(OPEN_KEY, "0");
    post("open", { open: false });
    if (focus) launcher.focus();
  }

  launcher.addEventListener("click", () => (isOpen ? close(false) : open(true)));
  root.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && isOpen) close(true);
  });
  showUnread();

  function attach() {
    document.body.appendChild(host);
    if (session(OPEN_KEY) === "1") {
      open(false); // open on the last page: open here, without taking the focus
    } else if (readId()) {
      const idle = window.requestIdleCallback || ((callback) => setTimeout(callback, 2000));
      idle(load, { timeout: 5000 });
    }
  }

  window.ShopChat = Object.freeze({ open: () => open(true), close: () => close(false) });
  if (document.body) attach();
  else document.addEventListener("DOMContentLoaded", attach);
})();
