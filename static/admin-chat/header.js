// Every staff page: the live count of customers waiting for a person in the admin's header
// (templates/admin/base_site.html), and, if the staff member asked for it once with the
// "Notify me" button, a browser notification when a new customer starts waiting.
// Its words come from the project's JavaScript catalog in the admin's language (loaded before it).
import { gettext, interpolate } from "../chat/translation.js";

(() => {
  const link = document.getElementById("staff-waiting");
  if (!link) return;
  const count = link.querySelector(".staff-waiting-count");
  const button = document.getElementById("staff-notify");
  const EVERY_MS = 5000;
  const ASKED = "staffNotificationAsked";
  const canNotify = "Notification" in window;
  const seen = new Set(); // the conversations seen as the newest waiting one
  let first = true; // the first look only learns who waits

  if (button && canNotify && Notification.permission === "default" && !localStorage.getItem(ASKED)) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      localStorage.setItem(ASKED, "1"); // asked once, whatever the answer
      button.hidden = true;
      await Notification.requestPermission();
    });
  }

  function notify(found) {
    if (!canNotify || Notification.permission !== "granted" || !found.newest) return;
    const shown = new Notification(gettext("A customer is waiting for a person"), {
      body: interpolate(gettext("Conversation %(reference)s"), { reference: found.newest.reference }),
      tag: `waiting-${found.newest.id}`,
    });
    shown.addEventListener("click", () => {
      window.focus();
      window.location.assign(found.newest.url);
    });
  }

  async function look() {
    try {
      const response = await fetch(link.dataset.countUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.status === 401 || response.status === 403) return false;
      if (response.ok) {
        const found = await response.json();
        const id = found.newest ? found.newest.id : null;
        if (id !== null && !seen.has(id)) {
          if (!first) notify(found);
          seen.add(id);
        }
        first = false;
        if (count.textContent !== String(found.waiting)) refreshQueue();
        count.textContent = String(found.waiting);
        link.classList.toggle("staff-waiting-some", found.waiting > 0);
      }
    } catch {
      // the site did not answer: the next look tries again
    }
    return true;
  }

  // On the queue's page, the list follows the count: fetched again and swapped in, unless
  // the staff member is working in it (focus inside).
  async function refreshQueue() {
    const list = document.getElementById("changelist-form");
    if (!list || !document.body.classList.contains("model-waitingconversation")) return;
    if (list.contains(document.activeElement)) return;
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("changelist-form");
    if (fresh && !list.contains(document.activeElement)) list.replaceWith(document.importNode(fresh, true));
  }

  async function run() {
    if (!(await look())) return;
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, EVERY_MS));
      if (!(await look())) return;
    }
  }

  link.classList.toggle("staff-waiting-some", Number(count.textContent) > 0);
  run();
})();
