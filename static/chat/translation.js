// The page's words in its language (docs/i18n.md). templates/index.html loads Django's JavaScript
// catalog for the page's language (the djangojs domain, locale/*/LC_MESSAGES/djangojs.po) before
// these modules; should it fail to load, the page speaks English. Every text a customer reads goes
// through gettext() with a literal, which is how `makemessages -d djangojs` finds it.

/** The page's language, as the server rendered it (<html lang>): what the API is asked to answer in. */
export const language = document.documentElement.lang || "en";

export function gettext(text) {
  return window.django && window.django.gettext ? window.django.gettext(text) : text;
}

export function ngettext(singular, plural, count) {
  if (window.django && window.django.ngettext) return window.django.ngettext(singular, plural, count);
  return count === 1 ? singular : plural;
}

/** `text` with each %(name)s replaced by values[name]: "Code %(code)s" and {code: "7K3M9"}. */
export function interpolate(text, values) {
  return text.replace(/%\((\w+)\)s/g, (match, name) => (name in values ? String(values[name]) : match));
}
