// The honest handoff on the page (conversations/handoff.py): the field for the
// customer's email when the shop is closed, and the "Talk to a person" offer
// under a reply to "anyone there?" or to an upset customer. main.js calls these
// from a few hook lines; like view.js this builds nodes with textContent only.

import { ApiError, leaveEmail } from "./api.js";
import { gettext, interpolate } from "./translation.js";

const $ = (id) => document.getElementById(id);

const form = $("handoff-email");
const input = $("handoff-email-address");
const status = $("handoff-email-status");

let currentSession = () => null;

/** Show the email field (the reply said `offerEmail`); `sessionId()` gives the session to store it on. */
export function offerEmail(sessionId) {
  currentSession = sessionId;
  if (!form || !form.hidden) return;
  status.textContent = "";
  form.hidden = false;
}

/** Hide the email field: a person replied on the page, the assistant has the conversation again, or a new one starts. */
export function hideEmail() {
  if (!form) return;
  form.hidden = true;
  status.textContent = "";
}

/** Put a "Talk to a person" button under the reply `item`; `ask` asks for a person. */
export function offerPerson(item, ask) {
  if (!item || item.querySelector(".person-offer")) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "ghost-button person-offer";
  button.dataset.testid = "person-offer";
  button.textContent = gettext("Talk to a person");
  button.addEventListener("click", () => {
    button.disabled = true;
    ask();
  });
  (item.querySelector(".message-body") || item).appendChild(button); // under the bubble
}

async function submitEmail(event) {
  event.preventDefault();
  const sessionId = currentSession();
  const email = input.value.trim();
  if (!sessionId) return;
  if (!input.checkValidity() || !email) {
    status.textContent = gettext("Please enter an email address such as name@example.com.");
    input.focus();
    return;
  }
  status.textContent = gettext("Saving…");
  try {
    await leaveEmail(sessionId, email);
    status.textContent = interpolate(gettext("Thank you. We'll write to %(email)s when someone from our team replies."), { email });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    status.textContent = error.code === "invalid_email"
      ? gettext("That does not look like an email address. Please check it.")
      : interpolate(gettext("Could not save your email: %(error)s"), { error: error.message });
  }
}

if (form) form.addEventListener("submit", submitEmail);
