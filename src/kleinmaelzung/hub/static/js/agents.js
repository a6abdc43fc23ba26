// Agents: every agent the hub has seen (GET /api/agents), online or not: host, software,
// uptime, configuration revision, instruments, spool and clock.

import { ago, api, fill, h } from "./dom.js";

const REFRESH_S = 2;

export function mount(section) {
  const note = h("p", { class: "hint", role: "status" });
  const body = h("tbody");
  fill(section,
    h("div", { class: "toolbar" }, h("h1", {}, "Agents")),
    note,
    h("div", { class: "table-wrap" }, h("table", { id: "agents-table" },
      h("thead", {}, h("tr", {}, ["agent", "state", "host", "software", "uptime", "configuration", "instruments", "spool", "dropped", "clock offset"]
        .map((c) => h("th", { scope: "col" }, c)))), body)));
  let timer = null;

  async function load() {
    try {
      const agents = await api("/api/agents");
      const online = agents.filter((a) => a.online !== false).length;
      note.textContent = agents.length ? `${online} of ${agents.length} online` : "No agent has connected yet.";
      const now = Date.now() / 1000;
      fill(body, agents.map((a) => h("tr", { "data-agent": a.id },
        h("td", {}, h("strong", {}, a.id), a.run ? h("div", { class: "hint" }, `run ${a.run}`) : ""),
        h("td", { class: a.online === false ? "hint" : "" }, a.online === false
          ? `offline${a.last_disconnected ? `, left ${ago(a.last_disconnected, now)}` : ""}${a.disconnect_reason ? ` (${a.disconnect_reason})` : ""}`
          : `online ${ago(a.connected_since, now).replace(" ago", "")}`),
        h("td", {}, a.host || "–"),
        h("td", {}, a.software || "–"),
        h("td", {}, a.uptime_s == null ? "–" : ago(now - a.uptime_s, now).replace(" ago", "")),
        h("td", {}, a.config_revision == null ? "–"
          : `${a.config_revision === 0 ? "its own file" : `revision ${a.config_revision}`}; ${a.remote_config === "refuse" ? "refuses" : "accepts"} remote`),
        h("td", {}, a.instruments.map((id, i) => [i ? ", " : "", h("a", { href: `#/overview` }, id)])),
        h("td", {}, a.spool_depth == null ? "–" : `${a.spool_depth} unacknowledged`),
        h("td", {}, a.dropped == null ? "–" : String(a.dropped)),
        h("td", { class: a.clock_ok ? "" : "error" },
          a.clock_offset_s == null ? "–" : `${a.clock_offset_s >= 0 ? "+" : ""}${a.clock_offset_s.toFixed(3)} s${a.clock_ok ? "" : " (beyond the hub's bound)"}`))));
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
