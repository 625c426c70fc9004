// A small, safe Markdown renderer for the assistant's replies.
//
// It builds DOM nodes with createElement and textContent only, never innerHTML,
// so nothing a model (or a customer it echoes) writes can become markup: raw
// HTML shows as text. Links are kept only for http(s) and mailto URLs and open
// in a new tab without a referrer or an opener; an image is never loaded (it
// becomes a link named by its alt text), so no other origin is ever contacted.
//
// Supported: paragraphs (single newlines are line breaks), headings, lists
// (nested by indentation), block quotes, fenced and indented code, tables,
// horizontal rules, **strong**, *emphasis*, ~~strikethrough~~, `code`,
// [links](https://...), <https://...> and bare URLs.
//
// renderMarkdown(text) -> DocumentFragment

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?/;
const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_DIVIDER = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;
const INDENTED_CODE = /^( {4}|\t)/;

function el(tag, parent, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function indentOf(line) {
  return line.match(/^\s*/)[0].replace(/\t/g, "    ").length;
}

function isBlank(line) {
  return line.trim() === "";
}

// Does `line` start a block other than a paragraph?
function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST_ITEM.test(line);
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function blocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }

    const fence = line.match(FENCE);
    if (fence) {
      const marker = fence[1];
      const code = [];
      i++;
      // An unclosed fence runs to the end: that is how a reply looks mid-stream.
      while (i < lines.length && !lines[i].trim().startsWith(marker)) code.push(lines[i++]);
      i++;
      codeBlock(code.join("\n"), fence[2], parent);
      continue;
    }

    const heading = line.match(HEADING);
    if (heading) {
      // h1/h2 would shout inside a chat bubble: every heading is a small one.
      const node = el(heading[1].length <= 2 ? "h3" : "h4", parent);
      inline(heading[2], node);
      i++;
      continue;
    }

    if (RULE.test(line)) {
      el("hr", parent);
      i++;
      continue;
    }

    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && !isBlank(lines[i]) && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        quoted.push(lines[i++].replace(QUOTE, ""));
      }
      if (depth < 8) blocks(quoted, el("blockquote", parent), depth + 1);
      continue;
    }

    if (LIST_ITEM.test(line)) {
      i = list(lines, i, parent, depth);
      continue;
    }

    if (line.includes("|") && i + 1 < lines.length && TABLE_DIVIDER.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, parent);
      continue;
    }

    if (INDENTED_CODE.test(line) && depth === 0) {
      const code = [];
      while (i < lines.length && (INDENTED_CODE.test(lines[i]) || isBlank(lines[i]))) {
        code.push(lines[i++].replace(INDENTED_CODE, ""));
      }
      codeBlock(code.join("\n").replace(/\n+$/, ""), "", parent);
      continue;
    }

    const paragraph = [];
    while (i < lines.length && !isBlank(lines[i]) && (paragraph.length === 0 || !startsBlock(lines[i]))) {
      paragraph.push(lines[i++].trim());
    }
    const p = el("p", parent);
    paragraph.forEach((text, index) => {
      if (index) el("br", p);
      inline(text, p);
    });
  }
}

function codeBlock(text, language, parent) {
  const pre = el("pre", parent);
  const code = el("code", pre, text);
  if (language) code.dataset.language = language;
}

function list(lines, start, parent, depth) {
  const first = lines[start].match(LIST_ITEM);
  const baseIndent = indentOf(first[1]);
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul", parent);
  if (ordered) {
    const number = parseInt(first[2], 10);
    if (number !== 1) node.start = number;
  }
  let i = start;
  while (i < lines.length) {
    const item = lines[i].match(LIST_ITEM);
    if (!item || indentOf(item[1]) !== baseIndent || /\d/.test(item[2]) !== ordered) break;
    const content = [item[3]];
    const contentIndent = baseIndent + 2;
    i++;
    // The item goes on while lines are indented under it (a nested list, more
    // text) or continue its paragraph lazily; a blank line followed by an
    // unindented line ends it.
    while (i < lines.length) {
      const next = lines[i];
      if (isBlank(next)) {
        if (i + 1 < lines.length && indentOf(lines[i + 1]) >= contentIndent && !isBlank(lines[i + 1])) {
          content.push("");
          i++;
          continue;
        }
        break;
      }
      if (indentOf(next) >= contentIndent) {
        content.push(next.slice(Math.min(indentOf(next), contentIndent)));
        i++;
        continue;
      }
      if (!startsBlock(next)) {
        content.push(next.trim());
        i++;
        continue;
      }
      break;
    }
    const li = el("li", node);
    if (depth < 8) blocks(content, li, depth + 1);
    // A blank line between items does not end the list.
    if (i < lines.length && isBlank(lines[i])) {
      let j = i;
      while (j < lines.length && isBlank(lines[j])) j++;
      const following = j < lines.length && lines[j].match(LIST_ITEM);
      if (following && indentOf(following[1]) === baseIndent && /\d/.test(following[2]) === ordered) {
        i = j;
      } else {
        break;
      }
    }
  }
  return i;
}

function table(lines, start, parent) {
  const header = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((cell) =>
    cell.startsWith(":") && cell.endsWith(":") ? "center" : cell.endsWith(":") ? "right" : ""
  );
  const wrap = el("div", parent);
  wrap.className = "md-table";
  const node = el("table", wrap);
  const headRow = el("tr", el("thead", node));
  header.forEach((cell, index) => {
    const th = el("th", headRow);
    if (aligns[index]) th.className = "align-" + aligns[index];
    inline(cell, th);
  });
  const body = el("tbody", node);
  let i = start + 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
    const row = el("tr", body);
    const cells = splitRow(lines[i]);
    header.forEach((_, index) => {
      const td = el("td", row);
      if (aligns[index]) td.className = "align-" + aligns[index];
      inline(cells[index] || "", td);
    });
    i++;
  }
  return i;
}

// --- inline ---------------------------------------------------------------

const INLINE = new RegExp(
  [
    "(?<code>`+)(?<codeText>[^`]|[^`][\\s\\S]*?[^`])\\k<code>(?!`)",
    "(?<image>!)?\\[(?<linkText>(?:[^\\[\\]\\n]|\\[[^\\]\\n]*\\])+)\\]\\(\\s*<?(?<linkUrl>[^\\s<>()]+(?:\\([^\\s()]*\\)[^\\s<>()]*)*)>?(?:\\s+(?:\"[^\"\\n]*\"|'[^'\\n]*'))?\\s*\\)",
    "<(?<autolink>(?:https?:\\/\\/|mailto:)[^\\s<>]+)>",
    "(?<bare>https?:\\/\\/[^\\s<>\"']*[^\\s<>\"'.,;:!?)\\]*_~])",
    "\\*\\*(?=\\S)(?<strongText>[\\s\\S]*?\\S)\\*\\*",
    // Underscores only at word boundaries, so snake_case and __dunder__ names stay as they are.
    "(?<![\\w])__(?=\\S)(?<strongText2>[\\s\\S]*?\\S)__(?![\\w])",
    "~~(?=\\S)(?<delText>[\\s\\S]*?\\S)~~",
    "\\*(?=[^\\s*])(?<emText>(?:[^*]|\\*\\*[^*]+\\*\\*)*?[^\\s*])\\*",
    "(?<![\\w])_(?=[^\\s_])(?<emText2>[^_]*?[^\\s_])_(?![\\w])",
    "\\\\(?<escaped>[\\\\`*_{}\\[\\]()#+\\-.!|>~<])",
  ].join("|"),
  "g"
);

// The URL if it is safe to link to (absolute http, https or mailto), else null.
function safeUrl(raw) {
  let url;
  try {
    url = new URL(raw);
  } catch (error) {
    return null;
  }
  return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
}

function link(href, parent) {
  const a = el("a", parent);
  a.href = href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  return a;
}

function inline(text, parent, inLink) {
  const pattern = new RegExp(INLINE.source, "g");
  let last = 0;
  let match;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
    last = pattern.lastIndex;
    const g = match.groups;
    if (g.code !== undefined) {
      el("code", parent, g.codeText.length > 2 && g.codeText.startsWith(" ") && g.codeText.endsWith(" ")
        ? g.codeText.slice(1, -1) : g.codeText);
    } else if (g.linkText !== undefined) {
      const href = inLink ? null : safeUrl(g.linkUrl);
      // An image is never loaded: it becomes a link to it, named by its alt text.
      if (href && g.image) link(href, parent).textContent = g.linkText;
      else if (href) inline(g.linkText, link(href, parent), true);
      else inline(g.linkText, parent, inLink);
    } else if (g.autolink !== undefined || g.bare !== undefined) {
      const raw = g.autolink !== undefined ? g.autolink : g.bare;
      const href = inLink ? null : safeUrl(raw);
      if (href) link(href, parent).textContent = raw.replace(/^mailto:/, "");
      else parent.appendChild(document.createTextNode(raw));
    } else if (g.strongText !== undefined || g.strongText2 !== undefined) {
      inline(g.strongText !== undefined ? g.strongText : g.strongText2, el("strong", parent), inLink);
    } else if (g.delText !== undefined) {
      inline(g.delText, el("del", parent), inLink);
    } else if (g.emText !== undefined || g.emText2 !== undefined) {
      inline(g.emText !== undefined ? g.emText : g.emText2, el("em", parent), inLink);
    } else if (g.escaped !== undefined) {
      parent.appendChild(document.createTextNode(g.escaped));
    }
  }
  if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
}

export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  blocks(String(text).replace(/\r\n?/g, "\n").split("\n"), fragment, 0);
  return fragment;
}
