// The admin's live view of a conversation (templates/admin/conversations/conversation/live.html).
// Waits for new messages and state changes as the customer's page does (a long poll of the staff
// endpoint, conversations/inbox.py), sends with fetch (no reload), and inserts saved replies.
// No innerHTML: every text goes in as textContent. Every text staff read goes through gettext() with a
// literal (`makemessages -d djangojs` finds it): the project's JavaScript catalog in the admin's language,
// which templates/admin/base_site.html loads; should it fail to load, English (chat/translation.js).
import { gettext, interpolate } from "../chat/translation.js";

(() => {
  const root = document.getElementById("live");
  if (!root) return;

  const STATES = {
    assistant: gettext("The assistant answers"),
    waiting: gettext("Waiting for a person"),
    staff: gettext("With a person"),
  };
  const ROLES = { user: gettext("Customer"), assistant: gettext("Assistant"), event: gettext("Notice") };
  const RETRY_MS = 3000;
  const SUMMARY_EVERY_MS = 2000;
  const SUMMARY_TRIES = 15;

  const transcript = document.getElementById("transcript");
  const stateLine = document.getElementById("live-state");
  const actions = root.querySelector(".live-actions");
  const form = document.getElementById("reply-form");
  const box = document.getElementById("reply-box");
  const status = document.getElementById("reply-status");
  const matches = document.getElementById("saved-matches");
  const savedData = document.getElementById("saved-replies");
  const saved = savedData ? JSON.parse(savedData.textContent) : [];

  let after = Number(root.dataset.after);
  let state = root.dataset.state;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function time(iso) {
    const when = new Date(iso);
    const el = document.createElement("time");
    el.dateTime = iso;
    el.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return el;
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 160;
  }

  function append(message) {
    if (message.seq <= after) return;
    after = message.seq;
    const item = document.createElement("li");
    item.className = `msg msg-${message.role}` + (message.status !== "complete" ? ` msg-${message.status}` : "");
    item.dataset.seq = String(message.seq);
    const who = document.createElement("p");
    who.className = "msg-who";
    who.append(message.role === "staff"
      ? `${interpolate(gettext("%(author)s (staff)"), { author: message.author || gettext("Staff") })} `
      : `${ROLES[message.role] || message.role} `);
    who.append(time(message.createdAt));
    if (message.status === "failed") who.append(` · ${gettext("not answered")}`);
    const text = document.createElement("div");
    text.className = "msg-text";
    text.textContent = message.content;
    item.append(who, text);
    const follow = nearBottom();
    transcript.append(item);
    if (follow) item.scrollIntoView({ block: "nearest" });
  }

  function showState(handoff, waitingSince) {
    state = handoff;
    root.dataset.state = handoff;
    stateLine.dataset.state = handoff;
    stateLine.textContent = STATES[handoff] || handoff;
    if (waitingSince) {
      stateLine.append(`${handoff === "waiting" ? gettext(", since") : gettext(": the customer waits, since")} `);
      stateLine.append(time(waitingSince));
    }
    if (actions) actions.hidden = handoff === "assistant";
  }

  function fillList(id, texts, empty) {
    const list = document.getElementById(id);
    const items = (texts.length ? texts : [empty]).map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    });
    list.replaceChildren(...items);
  }

  // The language the customer last wrote in: it changes when they switch the page's language.
  function showLanguage(code, name) {
    const line = document.getElementById("live-language");
    if (!line || line.dataset.language === code) return;
    line.dataset.language = code;
    const strong = line.querySelector("strong");
    if (strong) strong.textContent = name;
  }

  function showSummary(summary) {
    const text = document.getElementById("summary-text");
    text.textContent = summary.text ? summary.text + (summary.pending ? ` ${gettext("(being brought up to date…)")}` : "")
      : summary.pending ? gettext("A summary is being written…") : "";
    text.hidden = !text.textContent;
    fillList("summary-customer", summary.customer, gettext("None yet."));
    fillList("summary-answers", summary.answers, gettext("Nothing yet."));
    root.dataset.summaryPending = summary.pending ? "on" : "off";
    if (summary.pending && !awaiting) awaitSummary();
  }

  async function look(wait) {
    const query = new URLSearchParams({ after: String(after), state });
    if (!wait) query.set("wait", "0");
    const response = await fetch(`${root.dataset.updatesUrl}?${query}`, {
      headers: { Accept: "application/json" }, credentials: "same-origin",
    });
    if (response.status === 401 || response.status === 403) {
      say(gettext("You are logged out or may no longer read this conversation: reload the page."));
      return "stop";
    }
    if (response.status === 404) {
      say(gettext("This conversation was deleted."));
      return "stop";
    }
    if (!response.ok) return "retry";
    const found = await response.json();
    found.messages.forEach(append);
    showState(found.handoff, found.waitingSince);
    if (found.summary) showSummary(found.summary);
    if (found.language) showLanguage(found.language, found.languageName);
    return found.hasMore ? "more" : "ok";
  }

  async function follow() {
    for (;;) {
      let outcome;
      try {
        outcome = await look(true);
      } catch {
        outcome = "retry";
      }
      if (outcome === "stop") return;
      if (outcome === "retry") await sleep(RETRY_MS);
    }
  }

  // The LLM's summary is written in the background; until it is there, ask now and then.
  let awaiting = false;
  async function awaitSummary() {
    awaiting = true;
    for (let i = 0; i < SUMMARY_TRIES && root.dataset.summaryPending === "on"; i++) {
      await sleep(SUMMARY_EVERY_MS);
      try {
        await look(false);
      } catch {
        // the long poll reports trouble; this only waits for the summary
      }
    }
    awaiting = false;
  }

  function say(text) {
    if (status) status.textContent = text;
  }

  function csrfToken() {
    return form.querySelector("input[name=csrfmiddlewaretoken]").value;
  }

  function newToken() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function post(action) {
    const body = new FormData(form);
    body.set("action", action);
    let response;
    try {
      response = await fetch(root.dataset.sendUrl, {
        method: "POST", body, credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      });
    } catch {
      say(gettext("Not sent: the site did not answer. Try again (a reply is stored once)."));
      return null;
    }
    const found = await response.json().catch(() => ({}));
    if (!response.ok) {
      say((found.error && found.error.message) || gettext("Not sent. Try again."));
      return null;
    }
    return found;
  }

  let sending = false;
  async function send() {
    if (sending) return;
    if (!box.value.trim()) {
      say(gettext("Write a reply first."));
      return;
    }
    sending = true;
    say(gettext("Sending…"));
    const found = await post("reply");
    sending = false;
    if (!found) return;
    box.value = "";
    form.elements.token.value = newToken();
    say(found.sent ? gettext("Sent.") : gettext("That reply was sent already; it was not sent again."));
    box.focus();
  }

  async function act(action) {
    const found = await post(action);
    if (!found) return;
    say(!found.changed ? gettext("The assistant was answering this conversation already.")
      : action === "close" ? gettext("Closed: the assistant answers again.")
        : gettext("Handed back: the assistant answers again."));
    showState("assistant", null);
    box.focus();
  }

  // --- saved replies: "/" and part of a title, or Alt+1..9 ----------------------------

  let shown = [];
  let chosen = 0;

  function insert(reply) {
    box.value = reply.text;
    closeMatches();
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
    say(interpolate(gettext('Inserted the saved reply "%(title)s".'), { title: reply.title }));
  }

  function closeMatches() {
    if (!matches) return;
    matches.hidden = true;
    shown = [];
    box.removeAttribute("aria-activedescendant");
  }

  function showMatches() {
    const typed = box.value;
    if (!matches || !saved.length || !/^\/[^\n]*$/.test(typed)) {
      closeMatches();
      return;
    }
    const wanted = typed.slice(1).toLowerCase();
    shown = saved.filter((reply) => reply.title.toLowerCase().includes(wanted)).slice(0, 9);
    chosen = 0;
    matches.replaceChildren(...shown.map((reply, index) => {
      const li = document.createElement("li");
      li.id = `saved-match-${index}`;
      li.setAttribute("role", "option");
      li.textContent = reply.title;
      li.addEventListener("mousedown", (event) => {
        event.preventDefault();
        insert(reply);
      });
      return li;
    }));
    matches.hidden = !shown.length;
    mark();
  }

  function mark() {
    matches.querySelectorAll("li").forEach((li, index) => li.setAttribute("aria-selected", String(index === chosen)));
    if (shown.length) box.setAttribute("aria-activedescendant", `saved-match-${chosen}`);
  }

  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    box.addEventListener("input", showMatches);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        send();
        return;
      }
      if (event.altKey && /^[1-9]$/.test(event.key) && saved[Number(event.key) - 1]) {
        event.preventDefault();
        insert(saved[Number(event.key) - 1]);
        return;
      }
      if (event.altKey && /^Digit[1-9]$/.test(event.code) && saved[Number(event.code.slice(5)) - 1]) {
        event.preventDefault(); // Alt+digit types another character on some layouts (macOS)
        insert(saved[Number(event.code.slice(5)) - 1]);
        return;
      }
      if (!shown.length) return;
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        chosen = (chosen + (event.key === "ArrowDown" ? 1 : shown.length - 1)) % shown.length;
        mark();
      } else if (event.key === "Enter") {
        event.preventDefault();
        insert(shown[chosen]);
      } else if (event.key === "Escape") {
        event.preventDefault();
        closeMatches();
      }
    });
  }
  root.querySelectorAll(".live-action").forEach((button) => {
    button.addEventListener("click", () => act(button.dataset.action));
  });

  if (root.dataset.live === "on") {
    const last = transcript.lastElementChild;
    if (last) last.scrollIntoView({ block: "end" });
    follow();
    awaitSummary();
  }
})();
