// Overview: every instrument as a card with its live values, state and agent, grouped and filtered.

import { ago, fill, formatValue, h, lasting } from "./dom.js";
import { globToRegExp } from "./grants.js";

const GROUPS_KEY = "kmz-dashboard-groups";

/** "Kiln: kiln-*; Steeping: steep-* germ-*" as [{name, patterns}], in the order given. */
export function parseGroups(text) {
  return text.split(";").map((part) => {
    const [name, patterns = ""] = part.split(":");
    return {
      name: name.trim(),
      patterns: patterns.trim().split(/[\s,]+/).filter(Boolean).map(globToRegExp),
    };
  }).filter((g) => g.name && g.patterns.length);
}

/** The heading of instruments the hub holds no location (group) for. */
const UNSET = { location: "no location", group: "no group" };

const STATE_WORDS = { online: "online", offline: "offline", faulted: "faulted", stale: "stale" };

export function mount(section, { lab, grant }) {
  const filter = h("input", {
    type: "search", id: "overview-filter", placeholder: "filter: id, kind, agent, channel, state",
    "aria-label": "Filter instruments", size: 32,
  });
  const grouping = h("select", { id: "overview-group", "aria-label": "Group by" },
    h("option", { value: "agent" }, "by agent"),
    h("option", { value: "kind" }, "by kind"),
    h("option", { value: "state" }, "by state"),
    h("option", { value: "location" }, "by location"),
    h("option", { value: "group" }, "by group"),
    h("option", { value: "mine" }, "my groups"),
    h("option", { value: "none" }, "no groups"));
  // User-defined groups, kept in this browser: "Kiln: kiln-*; Steeping: steep-* germ-*".
  const groupsInput = h("input", {
    type: "text", id: "overview-my-groups", size: 40, hidden: true,
    "aria-label": "My groups: name, colon, instrument patterns; groups separated by semicolons",
    placeholder: "Kiln: kiln-*; Steeping: steep-* germ-*",
    value: localStorage.getItem(GROUPS_KEY) || "",
  });
  const count = h("span", { class: "hint", role: "status" });
  const groups = h("div", { class: "groups" });
  fill(section,
    h("div", { class: "toolbar" }, h("h1", {}, "Instruments"), filter, grouping, groupsInput, count),
    groups);

  const cards = new Map();
  let visible = false;

  function card(id) {
    let c = cards.get(id);
    if (c) return c;
    const el = h("article", { class: "card", "data-instrument": id });
    c = {
      el,
      title: h("h3", {}, id),
      badge: h("span", { class: "badge", role: "status" }),
      kind: h("div", { class: "kind" }),
      values: h("dl", { class: "values" }),
      reason: h("div", { class: "reason" }),
      place: h("div", { class: "place" }),
      since: h("span", { class: "since" }),
      agent: h("span", { class: "agent" }),
      seen: h("span", { class: "seen" }),
      links: h("div", { class: "links" }),
      cells: new Map(),
      shape: "",
    };
    el.append(
      h("header", {}, c.title, c.badge), c.kind, c.place, c.values, c.reason,
      h("div", { class: "meta" }, c.since, c.agent, c.seen), c.links);
    cards.set(id, c);
    return c;
  }

  function channelsOf(entry) {
    const declared = entry.record.channels || [];
    const names = new Set(declared.map((ch) => ch.name));
    const extra = Object.keys(entry.values).filter((n) => !names.has(n))
      .map((name) => ({ name, unit: "" }));
    return [...declared, ...extra];
  }

  function renderValues(c, entry) {
    const channels = channelsOf(entry);
    const shape = channels.map((ch) => ch.name).join(",");
    if (shape !== c.shape) {
      c.shape = shape;
      c.cells.clear();
      const rows = [];
      for (const ch of channels) {
        const value = h("span", { class: "value" }, "–");
        // "grain temperature" for grain_temperature: it wraps at the space on a narrow card.
        rows.push(h("dt", { title: ch.description || ch.name }, ch.name.replaceAll("_", " ")),
          h("dd", { "data-channel": ch.name }, value, ch.unit ? h("span", { class: "unit" }, ch.unit) : null));
        c.cells.set(ch.name, value);
      }
      fill(c.values, rows);
    }
    for (const [name, cell] of c.cells) {
      const raw = entry.values[name];
      const corrected = entry.corrected?.[name];
      const text = raw === undefined ? "–" : formatValue(corrected ?? raw);
      if (cell.textContent !== text) cell.textContent = text;
      cell.title = corrected !== undefined ? `corrected by calibration; raw ${formatValue(raw)}` : "";
    }
  }

  function renderMeta(c, entry, now) {
    const state = lab.displayState(entry, now);
    if (c.el.dataset.state !== state) {
      c.el.dataset.state = state;
      c.badge.dataset.state = state;
      c.badge.textContent = STATE_WORDS[state] || state;
    }
    const since = entry.stateSince;
    // Since when: seen by this page, or for an offline one its last reading; the hub's
    // list does not say when an online instrument came online.
    c.since.textContent = state === "stale"
      ? `no reading for ${lasting(entry.arrived, now)}`
      : since ? `${state} for ${lasting(since, now)}` : "";
    c.since.hidden = !c.since.textContent;
    c.seen.textContent = `last seen ${ago(entry.ts, now)}`;
  }

  function renderCard(id) {
    const entry = lab.instruments.get(id);
    const c = card(id);
    const r = entry.record;
    c.kind.textContent = r.description ? `${r.kind} · ${r.description}` : r.kind;
    c.agent.textContent = `agent ${r.agent}`;
    // Where it is and who looks after it, as an admin set it at the hub.
    const meta = r.metadata || {};
    c.place.textContent = [meta.location, meta.group, meta.owner && `owner ${meta.owner}`]
      .filter(Boolean).join(" · ");
    c.place.hidden = !c.place.textContent;
    c.reason.textContent = [r.reason, lab.leaseText(entry)].filter(Boolean).join(" · ");
    c.reason.hidden = !c.reason.textContent;
    if (!c.links.childElementCount) {
      const enc = encodeURIComponent(id);
      const drive = (r.commands || []).some((cmd) => grant.mayCommand(id, cmd.name)) || grant.mayLease(id);
      fill(c.links,
        h("a", { href: `#/plots/${enc}` }, "Plot"),
        drive ? h("a", { href: `#/drive/${enc}` }, "Drive") : null,
        h("a", { href: `#/log/${enc}` }, "Log"));
    }
    renderValues(c, entry);
    renderMeta(c, entry, Date.now() / 1000);
    c.search = [id, r.kind, r.agent, r.description, r.state, meta.location, meta.group, meta.owner,
      ...(r.channels || []).map((ch) => ch.name)].filter(Boolean).join(" ").toLowerCase();
  }

  function layout() {
    const words = filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const by = grouping.value;
    const now = Date.now() / 1000;
    const buckets = new Map();
    let shown = 0;
    const ids = [...lab.instruments.keys()].sort();
    for (const id of ids) {
      const c = card(id);
      const entry = lab.instruments.get(id);
      const state = lab.displayState(entry, now);
      const text = `${c.search} ${state}`;
      if (words.length && !words.every((w) => text.includes(w))) continue;
      shown++;
      const key = by === "agent" ? entry.record.agent : by === "kind" ? entry.record.kind
        : by === "state" ? state : by === "mine" ? myGroup(id)
        : by in UNSET ? entry.record.metadata?.[by] || UNSET[by] : "";
      if (!buckets.has(key)) buckets.set(key, []);
      buckets.get(key).push(c.el);
    }
    for (const [id, c] of cards) if (!lab.instruments.has(id)) cards.delete(id);
    const order = by === "mine" ? [...mine.map((g) => g.name), "other"] : null;
    // Those without a location (or group) last: the lab's rooms first.
    const last = (key) => key === UNSET[by] ? 1 : 0;
    const keys = [...buckets.keys()].sort((a, b) =>
      order ? order.indexOf(a) - order.indexOf(b) : last(a) - last(b) || a.localeCompare(b));
    const sections = keys.map((key) => h("section", { class: "group" },
      key ? h("h2", {}, by === "agent" ? `Agent ${key}` : key) : null,
      h("div", { class: "cards" }, buckets.get(key))));
    fill(groups, sections.length ? sections
      : h("p", { class: "hint" }, lab.instruments.size ? "No instrument matches the filter."
        : "No instruments yet: start an agent (kmz agent CONFIG) or kmz demo."));
    count.textContent = `${shown} of ${lab.instruments.size}`;
    if (shown && !performance.getEntriesByName("kmz:overview-painted").length) {
      // When the first cards reached the screen (the browser tests read it).
      requestAnimationFrame(() => performance.mark("kmz:overview-painted"));
    }
  }

  lab.addEventListener("change", (event) => {
    const { ids, structural } = event.detail;
    for (const id of ids) if (lab.instruments.has(id)) renderCard(id);
    if (structural && visible) layout();
  });
  let mine = parseGroups(groupsInput.value);
  function myGroup(id) {
    const found = mine.find((g) => g.patterns.some((p) => p.test(id)));
    return found ? found.name : "other";
  }
  filter.addEventListener("input", layout);
  grouping.addEventListener("change", () => {
    groupsInput.hidden = grouping.value !== "mine";
    layout();
  });
  groupsInput.addEventListener("input", () => {
    localStorage.setItem(GROUPS_KEY, groupsInput.value);
    mine = parseGroups(groupsInput.value);
    layout();
  });
  // Relative times and staleness move with the clock.
  setInterval(() => {
    if (!visible || document.hidden) return;
    const now = Date.now() / 1000;
    let moved = false;
    for (const [id, c] of cards) {
      const entry = lab.instruments.get(id);
      if (!entry) continue;
      const before = c.el.dataset.state;
      renderMeta(c, entry, now);
      moved ||= before !== c.el.dataset.state;
    }
    if (moved && grouping.value === "state") layout();
  }, 1000);

  return {
    show() {
      visible = true;
      for (const id of lab.instruments.keys()) renderCard(id);
      layout();
    },
    hide() {
      visible = false;
    },
  };
}
