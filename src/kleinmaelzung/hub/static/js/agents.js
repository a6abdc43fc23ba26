// Agents: each connected agent (GET /api/agents) with its instruments, spool and clock.

import { ago, api, fill, h } from "./dom.js";

const REFRESH_S = 2;

export function mount(section) {
  const note = h("p", { class: "hint", role: "status" });
  const body = h("tbody");
  fill(section,
    h("div", { class: "toolbar" }, h("h1", {}, "Agents")),
    note,
    h("div", { class: "table-wrap" }, h("table", { id: "agents-table" },
      h("thead", {}, h("tr", {}, ["agent", "software", "connected", "instruments", "spool", "dropped", "clock offset"]
        .map((c) => h("th", { scope: "col" }, c)))), body)));
  let timer = null;

  async function load() {
    try {
      const agents = await api("/api/agents");
      note.textContent = agents.length ? `${agents.length} connected` : "No agent is connected.";
      const now = Date.now() / 1000;
      fill(body, agents.map((a) => h("tr", { "data-agent": a.id },
        h("td", {}, h("strong", {}, a.id), h("div", { class: "hint" }, `run ${a.run}`)),
        h("td", {}, a.software || "–"),
        h("td", {}, ago(a.connected_since, now).replace(" ago", "")),
        h("td", {}, a.instruments.map((id, i) => [i ? ", " : "", h("a", { href: `#/overview` }, id)])),
        h("td", {}, a.spool_depth === null ? "–" : `${a.spool_depth} unacknowledged`),
        h("td", {}, a.dropped === null ? "–" : String(a.dropped)),
        h("td", { class: a.clock_ok ? "" : "error" },
          a.clock_offset_s === null ? "–" : `${a.clock_offset_s >= 0 ? "+" : ""}${a.clock_offset_s.toFixed(3)} s${a.clock_ok ? "" : " (beyond the hub's bound)"}`))));
    } catch (error) {
      note.textContent = `The agents could not be read: ${error.message}`;
    }
  }

  return {
    show() {
      load();
      clearInterval(timer);
      timer = setInterval(() => { if (!document.hidden) load(); }, REFRESH_S * 1000);
    },
    hide() {
      clearInterval(timer);
    },
  };
}
