// The dashboard's entry point: sign-in, the hub link, and the pages (#/overview, #/plots, ...).
// Each page is a module with `mount(section, context)` returning `{show(params), hide()}`;
// all but the overview load when first opened.

import { api } from "./dom.js";
import { Grant } from "./grants.js";
import { HubLink } from "./hub.js";
import { Lab } from "./lab.js";
import * as overview from "./overview.js";

const PAGES = {
  overview: () => Promise.resolve(overview),
  plots: () => import("./plots.js"),
  drive: () => import("./drive.js"),
  log: () => import("./log.js"),
  agents: () => import("./agents.js"),
  calibration: () => import("./calibration.js"),
};

const $ = (id) => document.getElementById(id);
/** Seconds of the hub's log replayed when the page connects. */
const REPLAY_S = 10;
let context = null;
const mounted = new Map();
let current = null;

function showSignIn(message = "") {
  for (const section of document.querySelectorAll(".view")) section.hidden = true;
  $("sign-in").hidden = false;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("connection").hidden = true;
  const note = $("sign-in-message");
  note.textContent = message;
  note.classList.toggle("error", Boolean(message));
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  const note = $("sign-in-message");
  note.textContent = "signing in…";
  note.classList.remove("error");
  try {
    const session = await api("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: input.value.trim() }),
    });
    input.value = "";
    note.textContent = "";
    start(session);
  } catch (error) {
    note.textContent = `Not signed in: ${error.message}`;
    note.classList.add("error");
  }
}

async function signOut() {
  stop(); // first: the hub closing this page's WebSocket is no surprise then
  try {
    await api("/api/session", { method: "DELETE" });
    showSignIn("Signed out.");
  } catch (error) {
    showSignIn(`Sign-out failed: ${error.message}`);
  }
}

function stop() {
  if (context) context.link.stop();
  for (const page of mounted.values()) page.hide?.();
  for (const section of document.querySelectorAll(".view")) section.replaceChildren();
  mounted.clear();
  current = null;
  context = null;
}

function start(session) {
  const grant = new Grant(session);
  const link = new HubLink();
  const lab = new Lab();
  context = { link, lab, grant };
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("connection").hidden = false;
  $("who").textContent = session.auth ? `${session.user} · ${session.role}` : "open hub (no sign-in)";
  $("sign-out").hidden = !session.auth;

  let listing = null;
  const relist = () => {
    listing ??= link.list().then((answer) => {
      listing = null;
      if (answer.type === "instrument_list") lab.load(answer.instruments);
    });
    return listing;
  };
  link.addEventListener("welcome", async () => {
    performance.mark("kmz:welcome");
    await relist();
    // The last seconds from the hub's log first (values for every card at once, a start
    // for the plots), or after a reconnect what came since the newest sample seen.
    const since = lab.newestTs ?? Date.now() / 1000 - REPLAY_S;
    await link.subscribe(grant.subscriptionPatterns(), since);
  });
  link.addEventListener("data", (e) => lab.data(e.detail));
  link.addEventListener("status", (e) => {
    if (!lab.instruments.has(e.detail.instrument)) relist(); // one that appeared since
    lab.status(e.detail);
  });
  link.addEventListener("state", (e) => {
    const el = $("connection");
    el.dataset.state = e.detail;
    el.textContent = { connecting: "connecting…", live: "live", closed: "reconnecting…" }[e.detail];
  });
  link.addEventListener("unauthorized", () => {
    stop();
    showSignIn("Your session has ended (signed out elsewhere, expired, or its token was revoked). Sign in again.");
  });
  link.connect();
  // The first paint need not wait for the WebSocket's handshake: the same list over
  // REST, at once (the WebSocket's list replaces it when it comes).
  api("/api/instruments").then((records) => {
    performance.mark("kmz:listed");
    if (context?.lab === lab && !lab.instruments.size) lab.load(records);
  }).catch(() => {});
  route();
}

async function route() {
  if (!context) return;
  const [name, ...params] = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const page = PAGES[name] ? name : "overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (current && current !== page) {
    mounted.get(current)?.hide?.();
    $(`view-${current}`).hidden = true;
  }
  current = page;
  const section = $(`view-${page}`);
  let view = mounted.get(page);
  if (!view) {
    const module = await PAGES[page]();
    if (!context || current !== page) return;
    view = module.mount(section, context);
    mounted.set(page, view);
  }
  section.hidden = false;
  view.show?.(params.map(decodeURIComponent));
}

async function boot() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  const linkUsed = new URLSearchParams(location.search).get("signin") === "link-used";
  if (linkUsed) history.replaceState(null, "", "/" + location.hash);
  try {
    const session = await api("/api/session");
    performance.mark("kmz:session");
    start(session);
  } catch (error) {
    if (error.status !== 401) throw error;
    showSignIn(linkUsed ? "That sign-in link was used already or has expired. Paste a token instead." : "");
  }
}

boot();
