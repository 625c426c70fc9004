// "Continue on another device" and "Not you?" (docs/session-flow.md, conversations/devices.py).
//
// The devices dialog lists the browsers of this conversation (each can be
// ended), makes a one-time link, its QR code and a short code, and has "Not
// you? Start fresh", which ends this browser's session only. The join dialog
// redeems a link's token (from the page's #join= fragment, which the browser
// never sends to the server) or a typed code, and only once the customer
// confirms: a page opened by a link previewer redeems nothing. A browser that
// has a conversation of its own is told it will leave it before it switches.

import * as api from "./api.js";
import { gettext, interpolate, language } from "./translation.js";

const $ = (id) => document.getElementById(id);

/**
 * `sessionId()`: the stored id or null; `joined(id)`: this browser now has the session `id`
 * (show its conversation); `ended()`: this browser's session has ended (start fresh).
 */
export function startDevices({ sessionId, joined, ended }) {
  const openButton = $("devices-open");
  if (!openButton) return { refresh() {} }; // embedded: the shop's page keeps the session
  const dialog = $("devices-dialog");
  const list = $("device-list");
  const errorLine = $("devices-error");
  const joinDialog = $("join-dialog");
  const codeInput = $("join-code");
  const joinError = $("join-error");
  let pendingToken = null;

  function showError(line, message) {
    line.textContent = message || "";
    line.hidden = !message;
  }

  async function showDevices() {
    const id = sessionId();
    if (!id) return;
    showError(errorLine, null);
    let data;
    try {
      data = await api.getDevices(id);
    } catch (error) {
      if (!(error instanceof api.ApiError)) throw error;
      if (error.status === 404) {
        dialog.close();
        ended();
      } else {
        showError(errorLine, interpolate(gettext("Could not load your devices: %(error)s"), { error: error.message }));
      }
      return;
    }
    list.replaceChildren(...data.devices.map(deviceItem));
  }

  function deviceItem(device) {
    const item = document.createElement("li");
    item.dataset.device = String(device.device);
    item.dataset.current = String(device.current);
    const label = document.createElement("span");
    label.className = "device-label";
    label.textContent = device.current ? interpolate(gettext("%(device)s (this browser)"), { device: device.label }) : device.label;
    const when = document.createElement("span");
    when.className = "device-when";
    when.textContent = interpolate(gettext("joined %(joined)s, last seen %(seen)s"), { joined: formatTime(device.joinedAt), seen: formatTime(device.lastSeenAt) });
    item.append(label, when);
    if (!device.current) {
      const endButton = document.createElement("button");
      endButton.type = "button";
      endButton.className = "ghost-button danger";
      endButton.textContent = gettext("End");
      endButton.setAttribute("aria-label", interpolate(gettext("End %(device)s"), { device: device.label }));
      endButton.addEventListener("click", () => endDevice(device.device));
      item.append(endButton);
    }
    return item;
  }

  async function endDevice(device) {
    try {
      await api.endDevice(sessionId(), device);
    } catch (error) {
      if (!(error instanceof api.ApiError)) throw error;
      if (error.code !== "device_not_found") {
        showError(errorLine, interpolate(gettext("Could not end that device: %(error)s"), { error: error.message }));
        return;
      }
    }
    await showDevices();
  }

  async function makeOffer() {
    showError(errorLine, null);
    let offer;
    try {
      offer = await api.offerDevice(sessionId());
    } catch (error) {
      if (!(error instanceof api.ApiError)) throw error;
      showError(errorLine, interpolate(gettext("Could not make a link: %(error)s"), { error: error.message }));
      return;
    }
    // The SVG is the server's own rendering of the link (segno): parsed as an image, not as HTML.
    const svg = new DOMParser().parseFromString(offer.qrSvg, "image/svg+xml").documentElement;
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", gettext("QR code of the link"));
    $("offer-qr").replaceChildren(document.importNode(svg, true));
    $("offer-code").textContent = offer.code;
    $("offer-link").value = offer.link;
    $("offer").hidden = false;
    await showDevices();
  }

  async function notYou() {
    const id = sessionId();
    if (id) {
      try {
        await api.endDevice(id, "this");
      } catch (error) {
        if (!(error instanceof api.ApiError)) throw error;
        if (error.status !== 404) {
          showError(errorLine, interpolate(gettext("Could not end this browser's session: %(error)s"), { error: error.message }));
          return;
        }
      }
    }
    dialog.close();
    ended();
  }

  function askToJoin(token) {
    pendingToken = token;
    const hasOwn = Boolean(sessionId());
    $("join-leave").hidden = !hasOwn;
    $("join-code-row").hidden = token !== null;
    codeInput.value = "";
    showError(joinError, null);
    if (typeof joinDialog.showModal === "function") joinDialog.showModal();
    else joinDialog.setAttribute("open", "");
    if (token === null) codeInput.focus();
  }

  async function confirmJoin() {
    const body = pendingToken !== null ? { token: pendingToken } : { code: codeInput.value.trim() };
    if (!body.token && !body.code) {
      showError(joinError, gettext("Type the code shown on your other device."));
      return;
    }
    let data;
    try {
      data = await api.joinDevice(body, sessionId());
    } catch (error) {
      if (!(error instanceof api.ApiError)) throw error;
      showError(joinError, error.status === 429
        ? interpolate(gettext("Too many wrong codes. Try again %(when)s, or use the link or QR code."), { when: inAboutMinutes(error.retryAfter) })
        : error.message);
      return;
    }
    pendingToken = null;
    joinDialog.close();
    if (data.newSession) joined(data.sessionId); // else this browser was in that conversation already
  }

  openButton.addEventListener("click", () => {
    $("offer").hidden = true;
    dialog.showModal();
    showDevices();
  });
  $("offer-make").addEventListener("click", makeOffer);
  $("offer-copy").addEventListener("click", () => {
    const link = $("offer-link");
    link.select();
    if (navigator.clipboard) navigator.clipboard.writeText(link.value).catch(() => {});
  });
  $("not-you").addEventListener("click", notYou);
  $("devices-close").addEventListener("click", () => dialog.close());
  $("join-with-code").addEventListener("click", () => askToJoin(null));
  $("code-enter").addEventListener("click", () => {
    dialog.close();
    askToJoin(null);
  });
  $("join-confirm").addEventListener("click", confirmJoin);
  codeInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      confirmJoin();
    }
  });
  joinDialog.addEventListener("close", () => {
    pendingToken = null;
  });

  // A link opened here (also pasted into this tab, which loads nothing): take the token out of
  // the address (history, bookmarks, a shared screen), then ask.
  function fromAddress() {
    const match = /^#join=([A-Za-z0-9_-]{43})$/.exec(window.location.hash);
    if (!match) return;
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    checkThenAsk(match[1]);
  }

  // A browser with a conversation of its own asks first whether the link is to that conversation (an
  // emailed link opened where it is open already): then there is nothing to ask, nor to leave.
  async function checkThenAsk(token) {
    if (sessionId()) {
      try {
        if ((await api.joinDevice({ token, check: true }, sessionId())).sameConversation) return;
      } catch (error) {
        if (!(error instanceof api.ApiError)) throw error;
        // A link that is used or expired is refused as a join would be: the dialog says so at once.
        askToJoin(token);
        showError(joinError, error.message);
        return;
      }
    }
    askToJoin(token);
  }
  window.addEventListener("hashchange", fromAddress);
  fromAddress();

  return {
    /** Keep the devices button's state with the stored session. */
    refresh(busy) {
      openButton.disabled = busy || !sessionId();
    },
  };
}

function formatTime(iso) {
  const date = new Date(iso);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString(language, { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString(language, { dateStyle: "medium", timeStyle: "short" });
}

function inAboutMinutes(seconds) {
  if (!seconds) return gettext("later");
  const minutes = Math.ceil(seconds / 60);
  return minutes <= 1 ? gettext("in a minute") : interpolate(gettext("in about %(count)s minutes"), { count: minutes });
}
