// Which language the page speaks (docs/i18n.md): the customer's choice in the top bar's selector,
// else what the server picked (the shop's page's <html lang> for the embedded chat, the browser's
// Accept-Language, the site's default), which it rendered the page in (<html lang dir>).
//
// The choice is kept beside the session id (session.js) and in Django's language cookie, which the
// server renders the next visit in; a page rendered in another language (the cookie was cleared,
// or the frame of a shop's page, which gets no cookie) is asked for again with ?lang=, once. Every
// API call says the page's language (api.js, X-Chat-Language), so answers and notices follow it.

import { language } from "./translation.js";
import { readLanguage, storeLanguage } from "./session.js";

const select = document.getElementById("language");
const offered = select ? Array.from(select.options, (option) => option.value) : [];
const COOKIE = "django_language"; // settings.LANGUAGE_COOKIE_NAME

function show(code) {
  document.cookie = `${COOKIE}=${code}; path=/; max-age=31536000; SameSite=Lax`;
  const url = new URL(location.href);
  if (url.searchParams.get("lang") === code) return false; // asked for already: no loop
  url.searchParams.set("lang", code);
  location.replace(url.href);
  return true;
}

/** True when the page is being loaded again in the customer's language (start nothing then). */
export function reloadingForChoice() {
  const chosen = readLanguage();
  return Boolean(chosen && chosen !== language && offered.includes(chosen) && show(chosen));
}

if (select) {
  select.addEventListener("change", () => {
    if (!offered.includes(select.value)) return;
    storeLanguage(select.value);
    if (select.value !== language) show(select.value);
  });
}
