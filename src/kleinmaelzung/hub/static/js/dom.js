// Small DOM and formatting helpers. Text always goes in as text (never HTML).

/** An element: h("div", {class: "x", onclick: f}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

/** "3 s ago", "5 min ago", "2 h ago", "4 d ago" for a Unix time in seconds. */
export function ago(ts, now = Date.now() / 1000) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, now - ts);
  if (s < 1.5) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** "for 3 s", "for 5 min" ... for how long something has held. */
export function lasting(since, now = Date.now() / 1000) {
  if (since === null || since === undefined) return "";
  return ago(since, now).replace(" ago", "").replace("just now", "a moment");
}

/** Local clock time of a Unix time: 14:03:07. */
export function clock(ts) {
  if (ts === null || ts === undefined) return "";
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

/** Local date and time: 2026-11-26 14:03:07.123. */
export function stamp(ts, millis = false) {
  const d = new Date(ts * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const base = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return millis ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}

/** A reading for people: numbers to 6 significant digits at most, booleans as yes/no. */
export function formatValue(value) {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || Number.isInteger(value)) return String(value);
    return String(Number(value.toPrecision(6)));
  }
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

/** Save a Blob as a file through the browser's download. */
export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** JSON to a REST route of the hub; throws an Error whose `.code` is the hub's. */
export async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(body?.message || `${response.status} ${response.statusText}`);
    error.code = body?.code || String(response.status);
    error.status = response.status;
    throw error;
  }
  return body;
}
