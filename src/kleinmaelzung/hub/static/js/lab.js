// What the dashboard knows of the lab: every instrument with its latest values and state,
// and the live samples of each numeric channel (for plots). Fed by the hub's messages.

/** Samples kept per channel (a ring: the oldest go first); an hour at 50 Hz is 180,000. */
export const MAX_POINTS = 200_000;
/** An online instrument without a sample for this long, and this many intervals, is stale. */
const STALE_MIN_S = 5;
const STALE_INTERVALS = 5;

export class Lab extends EventTarget {
  constructor() {
    super();
    this.instruments = new Map();
    this.series = new Map();
    this.scheduled = false;
    this.changed = new Set();
    /** The newest sample time seen (agents' clocks), to resume from after a reconnect. */
    this.newestTs = null;
  }

  /** Instruments as listed by the hub (instrument_list or /api/instruments). */
  load(records) {
    const now = Date.now() / 1000;
    const seen = new Set();
    for (const record of records) {
      seen.add(record.id);
      const entry = this.instruments.get(record.id);
      if (entry) {
        if (entry.record.state !== record.state) entry.stateSince = record.since ?? now;
        entry.record = record;
      } else {
        this.instruments.set(record.id, {
          record,
          values: {},
          corrected: {},
          ts: record.last_seen,
          arrived: null,
          interval: null,
          // The hub's since; else (a state older than the hub's start) an offline
          // instrument's last reading.
          stateSince: record.since ?? (record.state === "offline" ? record.last_seen : null),
        });
      }
      this.changed.add(record.id);
    }
    for (const id of [...this.instruments.keys()]) {
      if (!seen.has(id)) {
        this.instruments.delete(id);
        this.changed.add(id);
      }
    }
    this.notify(true);
  }

  data(message) {
    const arrived = Date.now() / 1000;
    for (const sample of message.samples) {
      const entry = this.instruments.get(sample.instrument);
      // Replayed from the log after a reconnect, a sample may come twice: once is enough.
      if (!entry || (entry.sampleTs !== undefined && sample.ts <= entry.sampleTs)) continue;
      entry.sampleTs = sample.ts;
      this.newestTs = Math.max(this.newestTs ?? 0, sample.ts);
      if (entry.arrived !== null) {
        const gap = arrived - entry.arrived;
        entry.interval = entry.interval === null ? gap : entry.interval * 0.8 + gap * 0.2;
      }
      entry.arrived = arrived;
      entry.ts = sample.ts;
      entry.record.last_seen = sample.ts;
      Object.assign(entry.values, sample.values);
      entry.corrected = sample.corrected || {};
      for (const [channel, value] of Object.entries(sample.values)) {
        const number = typeof value === "boolean" ? Number(value) : value;
        if (typeof number !== "number") continue;
        const key = `${sample.instrument}.${channel}`;
        let series = this.series.get(key);
        if (!series) {
          series = { t: [], v: [] };
          this.series.set(key, series);
        }
        series.t.push(sample.ts);
        series.v.push(number);
        if (series.t.length > MAX_POINTS * 1.1) {
          series.t.splice(0, series.t.length - MAX_POINTS);
          series.v.splice(0, series.v.length - MAX_POINTS);
        }
      }
      this.changed.add(sample.instrument);
    }
    this.notify(false);
  }

  status(message) {
    const entry = this.instruments.get(message.instrument);
    if (!entry) return;
    if (entry.record.state !== message.state) {
      entry.stateSince = message.ts;
      entry.record.state = message.state;
    } else if (entry.stateSince === null) {
      entry.stateSince = null; // the state held before this page opened: since unknown
    }
    entry.record.reason = message.reason || "";
    entry.record.lease = message.lease || null;
    this.changed.add(message.instrument);
    this.notify(true);
  }

  /** "leased by alice until 14:03:07", or "" when nobody holds the instrument's lease. */
  leaseText(entry) {
    const lease = entry.record.lease;
    if (!lease) return "";
    return `leased by ${lease.holder} until ${new Date(lease.until * 1000).toLocaleTimeString([], { hour12: false })}`;
  }

  /** online, offline, faulted or stale (online, but no sample for a while). */
  displayState(entry, now = Date.now() / 1000) {
    const state = entry.record.state;
    if (state !== "online" || entry.arrived === null) return state;
    const limit = Math.max(STALE_MIN_S, STALE_INTERVALS * (entry.interval || 1));
    return now - entry.arrived > limit ? "stale" : state;
  }

  /** Tell listeners what changed, at most once per animation frame. */
  notify(structural) {
    if (structural) this.structural = true;
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      const detail = { ids: this.changed, structural: !!this.structural };
      this.changed = new Set();
      this.structural = false;
      this.dispatchEvent(new CustomEvent("change", { detail }));
    });
  }
}
