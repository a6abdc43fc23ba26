// Traffic log: the hub's /api/log as a filterable table, with a live tail.

import { api, fill, h, stamp } from "./dom.js";

const KINDS = ["", "command", "refused", "data", "status", "reply", "error", "agent_hello", "client_hello", "subscribe", "gap"];
const TAIL_S = 1;

export function mount(section, { lab, grant }) {
  const instrument = h("select", { id: "log-instrument", "aria-label": "Instrument" });
  const kind = h("select", { id: "log-kind", "aria-label": "Kind" },
    KINDS.map((k) => h("option", { value: k }, k || "every kind")));
  const text = h("input", { type: "search", id: "log-filter", placeholder: "filter the text", "aria-label": "Filter the log", size: 24 });
  const limit = h("select", { id: "log-limit", "aria-label": "Entries" },
    [100, 500, 2000].map((n) => h("option", { value: n }, `${n} newest`)));
  const tail = h("input", { type: "checkbox", id: "log-tail", checked: true });
  const note = h("p", { class: "hint", role: "status", id: "log-status" });
  const body = h("tbody");
  fill(section,
    h("div", { class: "toolbar" }, h("h1", {}, "Traffic log"), instrument, kind, limit, text,
      h("label", { for: "log-tail" }, tail, "live tail")),
    note,
    h("div", { class: "table-wrap" }, h("table", { id: "log-table" },
      h("thead", {}, h("tr", {}, ["time", "dir", "peer", "instrument", "type", "message"].map((c) =>
        h("th", { scope: "col", class: c === "peer" ? "hide-narrow" : null }, c)))), body)));

  let entries = [];
  let timer = null;
  let visible = false;
  let loading = false;

  function renderInstruments() {
    const ids = [...lab.instruments.keys()].sort();
    const next = ids.join(",");
    if (instrument.dataset.ids === next) return;
    instrument.dataset.ids = next;
    const chosen = instrument.value;
    fill(instrument,
      grant.isAdmin ? h("option", { value: "" }, "every instrument and peer") : null,
      ids.map((id) => h("option", { value: id }, id)));
    if (chosen) instrument.value = chosen;
  }

  async function load() {
    if (loading) return;
    if (!instrument.value && !grant.isAdmin) {
      note.textContent = "Choose an instrument: the whole log needs the admin role.";
      return;
    }
    loading = true;
    const query = new URLSearchParams({ limit: limit.value });
    if (instrument.value) query.set("instrument", instrument.value);
    if (kind.value) query.set("kind", kind.value);
    try {
      const page = await api(`/api/log?${query}`);
      entries = page.entries;
      note.textContent = `${entries.length} entries, newest first${tail.checked ? " · live" : ""}`;
      note.classList.remove("error");
      render();
    } catch (error) {
      note.textContent = `The log could not be read: ${error.message}`;
      note.classList.add("error");
    } finally {
      loading = false;
    }
  }

  function render() {
    const words = text.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const rows = [];
    for (const entry of entries) {
      const message = JSON.stringify(entry.message);
      const line = `${entry.peer} ${entry.instrument || ""} ${entry.type} ${message}`.toLowerCase();
      if (words.length && !words.every((w) => line.includes(w))) continue;
      rows.push(h("tr", { "data-type": entry.type, "data-id": entry.id },
        h("td", { class: "time" }, stamp(entry.ts, true)),
        h("td", {}, entry.direction === "in" ? "→ in" : "← out"),
        h("td", { class: "hide-narrow" }, entry.peer),
        h("td", {}, entry.instrument || ""),
        h("td", {}, entry.type),
        h("td", { class: "text", title: message.length > 2000 ? message.slice(0, 2000) + "…" : message },
          summary(entry))));
    }
    fill(body, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "hint" }, "No entry matches.")));
  }

  function schedule() {
    clearInterval(timer);
    timer = null;
    if (visible && tail.checked) timer = setInterval(() => { if (!document.hidden) load(); }, TAIL_S * 1000);
  }

  for (const control of [instrument, kind, limit]) control.addEventListener("change", () => {
    if (control === instrument) location.hash = instrument.value ? `#/log/${encodeURIComponent(instrument.value)}` : "#/log";
    load();
  });
  text.addEventListener("input", render);
  tail.addEventListener("change", () => { schedule(); load(); });
  lab.addEventListener("change", (event) => { if (event.detail.structural) renderInstruments(); });

  return {
    show([id]) {
      visible = true;
      renderInstruments();
      if (id) instrument.value = id;
      else if (!grant.isAdmin && !instrument.value && instrument.options.length) instrument.selectedIndex = 0;
      load();
      schedule();
    },
    hide() {
      visible = false;
      schedule();
    },
  };
}

/** The message of a log entry in a line a person reads; the whole JSON is its tooltip. */
export function summary(entry) {
  const m = entry.message || {};
  const pairs = (object) => Object.entries(object || {})
    .map(([k, v]) => `${k}=${typeof v === "object" && v !== null ? JSON.stringify(v) : v}`).join(" ");
  switch (entry.type) {
    case "data":
      return (m.samples || []).map((s) => `${s.instrument} #${s.seq}: ${pairs(s.values)}`).join("; ")
        + (m.backlog ? " (backlog)" : "");
    case "command":
      return `${m.instrument} ${m.name} ${pairs(m.args)}`.trim() + (m.key ? ` (key ${m.key})` : "");
    case "reply":
      return m.ok ? `ok ${pairs(m.result && typeof m.result === "object" ? m.result : { result: m.result })}`
        : `failed: ${m.error?.code}: ${m.error?.message}`;
    case "status":
      return `${m.instrument} ${m.state}${m.reason ? `: ${m.reason}` : ""}`;
    case "error":
      return `${m.code}: ${m.message}`;
    case "refused":
      return `${m.error?.code}: ${m.error?.message}`;
    case "subscribe":
    case "unsubscribe":
      return (m.patterns || []).join(" ");
    case "subscribed":
      return `patterns ${(m.patterns || []).join(" ")}; instruments ${(m.instruments || []).join(" ")}`;
    case "agent_hello":
      return `${m.agent_id} ${m.software || ""} with ${(m.instruments || []).length} instrument(s)`;
    case "client_hello":
      return m.name || "";
    case "gap":
    case "missed":
      return `${m.instrument} seq ${m.first_seq}..${m.last_seq}: ${m.count} ${entry.type}${m.reason ? ` (${m.reason})` : ""}`;
    default: {
      const text = JSON.stringify(m);
      return text.length > 300 ? text.slice(0, 300) + "…" : text;
    }
  }
}
