// SEAM: the history API (issue 13, `GET /api/history/ID`, being built by another session
// when this was written; shaped after its work in progress: `protocol.History`).
//
// Plots ask `loadHistory` for a channel's samples in a time range when the user zooms or
// pans past what this page received live. A hub without the route answers
// `{available: false}` and the plot says so; if the route's shape changes, adapt
// `request` and `parse` below (nothing else in the dashboard needs to change).

let available = null; // null: not probed yet

/** The route asked for one instrument's channel between two times (Unix seconds). */
function request(instrument, channel, from, to, maxPoints) {
  const query = new URLSearchParams({
    channel, since: String(from), until: String(to), points: String(maxPoints),
  });
  return `/api/history/${encodeURIComponent(instrument)}?${query}`;
}

/** `{t: [...], v: [...]}` from the answer: each bucket's mean, at the bucket's middle. */
function parse(body, channel) {
  const column = body.series?.[channel];
  const t = [];
  const v = [];
  if (!column || !Array.isArray(body.t)) return { t, v };
  const half = (body.every || 0) / 2;
  for (let i = 0; i < body.t.length; i++) {
    if (typeof column.mean[i] === "number") {
      t.push(body.t[i] + half);
      v.push(column.mean[i]);
    }
  }
  return { t, v };
}

/** The stored samples of `instrument`.`channel` in [from, to], at most about `maxPoints`. */
export async function loadHistory(instrument, channel, from, to, maxPoints = 2000) {
  if (available === false) return { available: false };
  let response;
  try {
    response = await fetch(request(instrument, channel, from, to, maxPoints), { credentials: "same-origin" });
  } catch {
    return { available: false };
  }
  if (response.status === 404 || response.status === 405 || response.status === 403) {
    const body = await response.json().catch(() => null);
    // A 404 naming an unknown instrument is an answer; a route that does not exist is not
    // (on a hub with auth, a route nobody declared is 403 for all but admins).
    if (!body || body.code !== "unknown_instrument") {
      available = false;
      return { available: false };
    }
  }
  if (!response.ok) return { available: true, error: `${response.status}`, t: [], v: [] };
  available = true;
  return { available: true, ...parse(await response.json(), channel) };
}
