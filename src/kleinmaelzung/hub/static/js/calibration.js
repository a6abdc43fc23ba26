// SEAM: calibration (issue 12). Another session was wiring the calibration REST API
// (/api/calibrations) when this was written; this page lists its records with their
// certificates when the hub has it, and says so when not. Still to build here: start a
// run, apply each point with the live value and a stability indicator, review the fit,
// sign, approve.

import { fill, h } from "./dom.js";

/** The route this page expects; adapt it to the API as it lands. */
const LIST_ROUTE = "/api/calibrations";

export function mount(section) {
  const body = h("div", { class: "seam", id: "calibration-seam" });
  fill(section, h("div", { class: "toolbar" }, h("h1", {}, "Calibration")), body);

  async function probe() {
    fill(body, "Looking for the hub's calibration API…");
    let response = null;
    try {
      response = await fetch(LIST_ROUTE, { credentials: "same-origin" });
    } catch {
      response = null;
    }
    if (!response || !response.ok) {
      fill(body,
        h("p", {}, "Calibration records, runs and certificates will be here once the hub serves them (issue 12)."),
        h("p", { class: "hint" }, "Meanwhile: ", h("code", {}, "kleinmaelzung.calibration"),
          " in Python keeps the records and makes the certificate PDF; the overview shows corrected values (hover a value) for channels with an approved calibration."));
      return;
    }
    const records = await response.json().catch(() => []);
    const list = Array.isArray(records) ? records : [];
    fill(body,
      h("p", {}, list.length ? `${list.length} calibration(s) on this hub, latest revision each:`
        : "No calibration on this hub yet."),
      list.length ? h("div", { class: "table-wrap" }, h("table", { id: "calibration-table" },
        h("thead", {}, h("tr", {}, ["certificate", "instrument", "calibrated on", "state", ""]
          .map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, list.map((r) => h("tr", {},
          h("td", {}, `${r.certificate_number}/${r.revision}`),
          h("td", {}, r.instrument_id),
          h("td", {}, String(r.calibrated_on)),
          h("td", {}, r.approved ? "approved" : "draft"),
          h("td", {}, h("a", {
            href: `${LIST_ROUTE}/${encodeURIComponent(r.certificate_number)}.pdf?revision=${r.revision}`,
            download: `${r.certificate_number}-${r.revision}.pdf`,
          }, "PDF"))))))) : null,
      h("p", { class: "hint" }, "Runs are started, stepped through and signed with ",
        h("code", {}, "kmz calibration"), " for now; doing it here (each point with its live value and a stability indicator, the fit, signing) is still to be built."));
  }

  return { show: probe };
}
