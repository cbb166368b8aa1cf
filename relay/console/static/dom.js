// Building the page from data without ever parsing data as HTML: every value becomes a text
// node or a property, so prompts, metadata, URLs and response excerpts stay inert.

/** An element: h("td", {class: "x", onclick: f}, "text", otherNode). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof el[name] !== "function") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link only for http(s) URLs (anything else, javascript: included, shows as text). */
export function safeLink(url, label) {
  let parsed = null;
  try {
    parsed = new URL(String(url));
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
    return h("span", { class: "url" }, String(url));
  }
  return h("a", { href: parsed.href, rel: "noopener noreferrer", target: "_blank" }, label ?? parsed.href);
}

/** JSON shown as text in a <pre>. */
export function jsonBlock(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** A table: columns = [[heading, row => cell content]]. */
export function table(columns, rows, rowProps = () => ({})) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", {}, heading)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", rowProps(row), columns.map(([, cell]) => h("td", {}, cell(row))))),
    ),
  );
}

/** A status word styled by its value. */
export function badge(status) {
  return h("span", { class: "badge", dataset: { status: String(status) } }, String(status));
}

/** A timestamp as the API gives it, shorter. */
export function when(iso) {
  return iso ? iso.replace("T", " ").replace("Z", "") : "";
}

/** A message line (error or notice). */
export function note(text, kind = "info") {
  return h("p", { class: `note ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}
