// The chat page: session-flow.md steps 4 to 7 in the browser.
//
// The sessionId lives in localStorage under "sessionId" and is only ever a
// value the backend returned: the page never makes one up. It is read again
// before every send (another tab may have changed it) and replaced whenever a
// response carries a different one. Each question gets a clientMessageId of
// its own (not a session id), so that Retry completes the same turn instead of
// storing the question twice.
(function () {
  "use strict";

  const KEY = "sessionId";
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
  // A question without a reply younger than this is still being answered
  // (elsewhere); older, it was abandoned and can be retried.
  const IN_FLIGHT_MS = 45000;
  // How often a "turn_in_progress" is waited out before giving up.
  const BUSY_RETRIES = 3;

  const conversation = document.getElementById("conversation");
  const log = document.getElementById("log");
  const welcome = document.getElementById("welcome");
  const form = document.getElementById("composer");
  const box = document.getElementById("message");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const newButton = document.getElementById("new-conversation");
  const deleteButton = document.getElementById("delete-conversation");
  const confirmDialog = document.getElementById("confirm-delete");
  const notice = document.getElementById("notice");
  const reference = document.getElementById("reference");
  const referenceId = document.getElementById("reference-id");
  const maxChars = parseInt(box.dataset.maxChars, 10) || 4000;

  let busy = false; // a turn of this tab is in flight
  let controller = null; // aborts the turn in flight (Stop)
  let generation = 0; // bumped when the view is reset, so a stale turn or load leaves it alone
  let refreshWhenIdle = false; // another tab changed things while this one was busy
  let pendingPoll = null;
  const channel = "BroadcastChannel" in window ? new BroadcastChannel("chat") : null;

  // --- The stored session id -------------------------------------------------

  // localStorage can be unavailable (storage disabled); the page then still
  // works, for this tab only.
  let memoryId = null;

  function storedSessionId() {
    let value;
    try {
      value = localStorage.getItem(KEY);
    } catch (error) {
      value = memoryId;
    }
    if (value !== null && !UUID.test(value)) {
      forgetSessionId(); // malformed: dropped quietly
      return null;
    }
    return value;
  }

  function storeSessionId(id) {
    if (!UUID.test(id)) return;
    memoryId = id;
    try {
      if (localStorage.getItem(KEY) !== id) localStorage.setItem(KEY, id);
    } catch (error) {
      /* memoryId keeps it */
    }
    showReference(id);
  }

  function forgetSessionId() {
    memoryId = null;
    try {
      localStorage.removeItem(KEY);
    } catch (error) {
      /* nothing stored */
    }
    showReference(null);
  }

  function showReference(id) {
    reference.hidden = !id;
    referenceId.textContent = id ? id.slice(0, 8) : "";
    reference.title = id ? "Read this out to our support staff if you contact us" : "";
    updateControls();
  }

  // --- Building the view -----------------------------------------------------

  function svg(paths, size) {
    const ns = "http://www.w3.org/2000/svg";
    const node = document.createElementNS(ns, "svg");
    node.setAttribute("viewBox", "0 0 24 24");
    node.setAttribute("width", size);
    node.setAttribute("height", size);
    node.setAttribute("fill", "none");
    node.setAttribute("stroke", "currentColor");
    node.setAttribute("stroke-width", "2");
    node.setAttribute("stroke-linecap", "round");
    node.setAttribute("stroke-linejoin", "round");
    node.setAttribute("aria-hidden", "true");
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

  function nearBottom() {
    return conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 120;
  }

  function scrollToBottom() {
    conversation.scrollTop = conversation.scrollHeight;
  }

  function updateEmptyState() {
    welcome.hidden = log.children.length > 0;
  }

  function clearView() {
    log.replaceChildren();
    updateEmptyState();
    hideNotice();
  }

  function addUserMessage(text, restored) {
    const item = element("div", restored ? "message" : "message enter");
    item.dataset.role = "user";
    item.appendChild(element("div", "bubble", text)); // plain text, always
    log.appendChild(item);
    updateEmptyState();
    return item;
  }

  function addAssistantMessage(text, restored) {
    const item = element("div", restored ? "message" : "message enter");
    item.dataset.role = "assistant";
    const avatar = element("span", "avatar");
    avatar.appendChild(svg(["M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.6A8 8 0 1 1 21 12Z"], 16));
    avatar.setAttribute("aria-hidden", "true");
    const body = element("div", "message-body");
    const bubble = element("div", "bubble");
    const content = element("div", "markdown");
    bubble.appendChild(content);
    const meta = element("div", "message-meta");
    body.append(bubble, meta);
    item.append(avatar, body);
    log.appendChild(item);
    updateEmptyState();
    item.reply = { text: "", content, meta, frame: 0 };
    if (text !== undefined) setReply(item, text);
    return item;
  }

  function showTyping(item) {
    const dots = element("span", "typing");
    dots.setAttribute("aria-label", "The assistant is typing");
    dots.setAttribute("role", "img");
    dots.append(element("span"), element("span"), element("span"));
    item.reply.content.replaceChildren(dots);
  }

  function setReply(item, text) {
    item.reply.text = text;
    item.reply.content.replaceChildren(window.renderMarkdown(text));
  }

  // Deltas can come faster than frames: render at most once per frame.
  function appendReply(item, piece) {
    const reply = item.reply;
    reply.text += piece;
    if (reply.frame) return;
    reply.frame = requestAnimationFrame(() => {
      reply.frame = 0;
      const stick = nearBottom();
      reply.content.replaceChildren(window.renderMarkdown(reply.text));
      if (stick) scrollToBottom();
    });
  }

  function finishReply(item, text, stopped) {
    if (item.reply.frame) cancelAnimationFrame(item.reply.frame);
    item.reply.frame = 0;
    item.classList.remove("streaming");
    setReply(item, text);
    const meta = item.reply.meta;
    meta.replaceChildren();
    if (stopped) {
      const badge = element("span", "badge", "Stopped");
      badge.title = "You stopped this reply; the part written so far is kept.";
      meta.appendChild(badge);
    }
    meta.appendChild(copyButton(item));
  }

  function copyButton(item) {
    const button = element("button", "icon-button copy-button");
    button.type = "button";
    const label = element("span", "", "Copy");
    button.append(svg(["M9 9h10v10H9z", "M5 15V5h10"], 14), label);
    button.addEventListener("click", async () => {
      const copied = await copyText(item.reply.text);
      label.textContent = copied ? "Copied" : "Copy failed";
      button.classList.add("copied");
      setTimeout(() => {
        label.textContent = "Copy";
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

  // Says under a question that it was not answered, and offers Retry if `retry` is given.
  function markUnanswered(userItem, message, retry) {
    clearUnanswered(userItem);
    const row = element("div", "turn-error");
    row.setAttribute("role", "alert");
    row.appendChild(element("span", "", message));
    if (retry) {
      const button = element("button", "retry-button", "Retry");
      button.type = "button";
      button.disabled = busy;
      button.addEventListener("click", () => {
        if (!busy) retry();
      });
      row.appendChild(button);
    }
    userItem.appendChild(row);
    userItem.classList.add("unanswered");
  }

  function clearUnanswered(userItem) {
    const row = userItem.querySelector(".turn-error");
    if (row) row.remove();
    userItem.classList.remove("unanswered");
  }

  // Once a newer question is sent, an older unanswered one can no longer be retried.
  function retireRetries() {
    for (const button of log.querySelectorAll(".retry-button")) {
      const row = button.parentElement;
      button.remove();
      row.removeAttribute("role");
      row.firstChild.textContent = "Not answered.";
    }
  }

  function showNotice(message) {
    notice.textContent = message;
    notice.hidden = false;
  }

  function hideNotice() {
    notice.hidden = true;
    notice.textContent = "";
  }

  function updateControls() {
    sendButton.disabled = busy;
    stopButton.hidden = !busy;
    deleteButton.disabled = busy || !storedSessionIdQuiet();
    log.setAttribute("aria-busy", busy ? "true" : "false");
    for (const button of log.querySelectorAll(".retry-button")) button.disabled = busy;
  }

  function storedSessionIdQuiet() {
    try {
      return localStorage.getItem(KEY) || memoryId;
    } catch (error) {
      return memoryId;
    }
  }

  // --- Restoring the conversation ------------------------------------------

  async function loadHistory() {
    clearTimeout(pendingPoll);
    const id = storedSessionId();
    const loading = ++generation;
    if (!id) {
      clearView();
      showReference(null);
      return;
    }
    showReference(id);
    let response;
    try {
      response = await fetch("/api/history", { headers: { "X-Session-Id": id, Accept: "application/json" } });
    } catch (error) {
      if (loading === generation) showNotice("Could not load your conversation. Check your connection and reload the page.");
      return;
    }
    if (loading !== generation) return;
    if (response.status === 404 || response.status === 400) {
      // Unknown, expired or malformed: start afresh (the next message gets a new id).
      if (storedSessionIdQuiet() === id) forgetSessionId();
      clearView();
      return;
    }
    if (!response.ok) {
      showNotice("Could not load your conversation right now. Reload the page to try again.");
      return;
    }
    let data;
    try {
      data = await response.json();
    } catch (error) {
      return; // cut off (the page is being left or reloaded)
    }
    if (loading !== generation) return;
    renderHistory(data.messages);
  }

  function renderHistory(messages) {
    hideNotice();
    log.replaceChildren();
    messages.forEach((message, index) => {
      if (message.role === "user") {
        const item = addUserMessage(message.content, true);
        const answered = messages[index + 1] && messages[index + 1].role === "assistant";
        if (!answered) unansweredFromHistory(item, message, index === messages.length - 1);
      } else {
        const item = addAssistantMessage(undefined, true);
        finishReply(item, message.content, message.status === "stopped");
      }
    });
    updateEmptyState();
    updateControls();
    scrollToBottom();
  }

  function unansweredFromHistory(item, message, isLast) {
    const retry = isLast && message.clientMessageId
      ? () => send(message.content, message.clientMessageId, item)
      : null;
    const age = Date.now() - Date.parse(message.createdAt);
    if (isLast && message.status !== "failed" && age < IN_FLIGHT_MS) {
      // Being answered in another tab: show it typing, and look again soon.
      showTyping(addAssistantMessage());
      pendingPoll = setTimeout(() => {
        if (!busy) loadHistory();
      }, 2000);
      return;
    }
    markUnanswered(item, message.status === "failed" ? "This message was not answered." : "Not answered.", retry);
  }

  // --- Sending ---------------------------------------------------------------

  function newClientMessageId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function submitFromBox() {
    const text = box.value.trim();
    if (!text || busy) return;
    if ([...text].length > maxChars) {
      showNotice(`Messages can be at most ${maxChars} characters; this one has ${[...text].length}. Please shorten it.`);
      return;
    }
    box.value = "";
    resizeBox();
    send(text, newClientMessageId(), null);
  }

  async function send(text, clientMessageId, retryOf) {
    if (busy) return;
    busy = true;
    controller = new AbortController();
    const turn = generation;
    hideNotice();
    let userItem = retryOf;
    if (userItem && userItem.isConnected) {
      clearUnanswered(userItem);
      // A reply already shown for it (an interrupted stream) is replaced.
      const next = userItem.nextElementSibling;
      if (next && next.dataset.role === "assistant") next.remove();
    } else {
      retireRetries();
      userItem = addUserMessage(text);
    }
    const replyItem = addAssistantMessage();
    replyItem.classList.add("streaming");
    showTyping(replyItem);
    updateControls();
    scrollToBottom();
    box.focus();

    const outcome = await runTurn(text, clientMessageId, replyItem, controller.signal, turn);

    if (turn === generation) {
      if (outcome.done) {
        finishReply(replyItem, outcome.done.reply, outcome.done.stopped);
      } else if (outcome.stopped && replyItem.reply.text) {
        finishReply(replyItem, replyItem.reply.text, true);
      } else {
        replyItem.remove();
        if (outcome.rejected) {
          // Refused before it was stored (too long, invalid): give the text back.
          userItem.remove();
          updateEmptyState();
          if (!box.value.trim()) box.value = text;
          resizeBox();
          showNotice(outcome.message);
        } else {
          const again = () => send(text, clientMessageId, userItem);
          markUnanswered(userItem, outcome.stopped ? "Stopped before an answer." : outcome.message, again);
        }
      }
    }
    busy = false;
    controller = null;
    updateControls();
    if (document.activeElement === document.body || document.activeElement === stopButton || !document.activeElement) {
      box.focus();
    }
    if (channel && turn === generation) channel.postMessage({ type: "changed", sessionId: storedSessionIdQuiet() });
    if (refreshWhenIdle) {
      refreshWhenIdle = false;
      loadHistory();
    }
  }

  // One turn against the API, waiting out another tab's turn a few times.
  // Resolves to {done}, {stopped}, {rejected, message} or {message}.
  async function runTurn(text, clientMessageId, replyItem, signal, turn) {
    for (let attempt = 0; ; attempt++) {
      const sentId = storedSessionId(); // read before every send: another tab may have changed it
      const body = { message: text, clientMessageId };
      if (sentId) body.sessionId = sentId;
      let response;
      try {
        response = await fetch("/api/chat", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
          body: JSON.stringify(body),
          signal,
        });
      } catch (error) {
        if (signal.aborted) return { stopped: true };
        return { message: "Could not reach the server. Check your connection." };
      }
      if (response.ok && (response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        return readEvents(response, sentId, replyItem, signal, turn);
      }
      let data = null;
      try {
        data = await response.json();
      } catch (error) {
        if (signal.aborted) return { stopped: true };
      }
      if (turn === generation && data && data.sessionId) adoptSessionId(data.sessionId, sentId, replyItem);
      if (response.ok && data && typeof data.reply === "string") return { done: data };
      const error = (data && data.error) || {};
      if (error.code === "turn_in_progress" && attempt < BUSY_RETRIES) {
        const wait = Math.min(parseInt(response.headers.get("Retry-After"), 10) || 2, 5) * 1000;
        if (await sleep(wait, signal)) continue;
        return { stopped: true };
      }
      if (error.code === "turn_in_progress") {
        return { message: "This conversation is still answering a message from another tab. Try again in a moment." };
      }
      if (["invalid_message", "message_too_long", "retry_superseded"].includes(error.code)) {
        return { rejected: true, message: error.message };
      }
      if (error.code === "invalid_session_id") forgetSessionId();
      return { message: error.message || `Something went wrong (HTTP ${response.status}).` };
    }
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

  // A response carrying a different session id replaces the stored one; the
  // messages on screen from the old one are no longer this conversation.
  function adoptSessionId(id, sentId, replyItem) {
    if (!UUID.test(id)) return;
    if (id !== sentId) {
      const keep = new Set([replyItem, replyItem.previousElementSibling]);
      for (const item of [...log.children]) if (!keep.has(item)) item.remove();
    }
    storeSessionId(id);
  }

  async function readEvents(response, sentId, replyItem, signal, turn) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let started = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseEvent(block);
          if (!event || turn !== generation) continue;
          if (event.name === "session") {
            adoptSessionId(event.data.sessionId, sentId, replyItem);
          } else if (event.name === "delta") {
            if (!started) {
              started = true;
              replyItem.reply.content.replaceChildren();
            }
            appendReply(replyItem, event.data.text);
          } else if (event.name === "done") {
            adoptSessionId(event.data.sessionId, storedSessionId(), replyItem);
            return { done: event.data };
          } else if (event.name === "error") {
            if (event.data.sessionId) adoptSessionId(event.data.sessionId, storedSessionId(), replyItem);
            const error = event.data.error || {};
            return { message: error.message || "The assistant could not answer." };
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return { stopped: true };
      return { message: "The connection was interrupted before the answer was complete." };
    }
    if (signal.aborted) return { stopped: true };
    return { message: "The connection was interrupted before the answer was complete." };
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

  // --- Conversation controls -------------------------------------------------

  function stopTurn() {
    if (controller) controller.abort();
  }

  function startNewConversation() {
    stopTurn();
    generation++;
    clearTimeout(pendingPoll);
    forgetSessionId();
    clearView();
    box.focus();
    if (channel) channel.postMessage({ type: "changed", sessionId: null });
  }

  async function deleteConversation() {
    const id = storedSessionId();
    if (!id || busy) return;
    const answer = await confirmDelete();
    if (answer !== "delete") {
      deleteButton.focus();
      return;
    }
    let response;
    try {
      response = await fetch("/api/history", { method: "DELETE", headers: { "X-Session-Id": id } });
    } catch (error) {
      showNotice("Could not reach the server, so nothing was deleted. Try again in a moment.");
      return;
    }
    if (response.ok || response.status === 404) {
      if (storedSessionIdQuiet() === id) forgetSessionId();
      generation++;
      clearView();
      box.focus();
      if (channel) channel.postMessage({ type: "changed", sessionId: null });
      return;
    }
    let message = `Could not delete the conversation (HTTP ${response.status}).`;
    try {
      const data = await response.json();
      if (data.error && data.error.message) message = `Could not delete the conversation: ${data.error.message}`;
    } catch (error) {
      /* keep the generic message */
    }
    showNotice(message);
  }

  function confirmDelete() {
    if (typeof confirmDialog.showModal !== "function") {
      return Promise.resolve(window.confirm("Delete this conversation? This cannot be undone.") ? "delete" : "cancel");
    }
    return new Promise((resolve) => {
      confirmDialog.returnValue = "";
      confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue), { once: true });
      confirmDialog.showModal();
    });
  }

  // --- The text box ------------------------------------------------------------

  const autoSized = window.CSS && CSS.supports && CSS.supports("field-sizing", "content");

  function resizeBox() {
    if (autoSized) return;
    box.style.height = "auto";
    box.style.height = Math.min(box.scrollHeight, 200) + "px";
  }

  // --- Wiring --------------------------------------------------------------------

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
  box.addEventListener("input", resizeBox);

  stopButton.addEventListener("click", () => {
    stopTurn();
    box.focus();
  });
  newButton.addEventListener("click", startNewConversation);
  deleteButton.addEventListener("click", deleteConversation);

  for (const button of document.querySelectorAll(".suggestion")) {
    button.addEventListener("click", () => {
      if (!busy) send(button.textContent.trim(), newClientMessageId(), null);
    });
  }

  // Another tab stored a different id (or forgot it): follow it.
  window.addEventListener("storage", (event) => {
    if (event.key !== KEY && event.key !== null) return;
    if (busy) {
      refreshWhenIdle = true;
    } else {
      loadHistory();
    }
  });

  // Another tab finished a turn on the same conversation: show it here too.
  if (channel) {
    channel.addEventListener("message", (event) => {
      const message = event.data || {};
      if (message.type !== "changed" || message.sessionId !== storedSessionIdQuiet()) return;
      if (busy) refreshWhenIdle = true;
      else loadHistory();
    });
  }

  updateControls();
  loadHistory();
  // Ready to type at once, except on touch screens, where focus would pop up the keyboard.
  if (window.matchMedia("(pointer: fine)").matches) box.focus();
})();
