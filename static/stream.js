// The page's one EventSource. EventSource reconnects by itself (with Last-Event-ID) after a network
// drop, but gives up for good on a refused request: a 401 once the token has expired, or a 5xx.
// Then this module refreshes the session and opens a new source from the last event it applied,
// with a growing delay while the server cannot be reached.

const MAX_RECONNECT_DELAY_MS = 30000;

export class TaskStream {
  /**
   * `onSnapshot(snapshot)`, `onTask(event)`, `onDeleted(event)`: parsed events (a `batch`
   * event is only noted: the board counts batches itself); `onState(state)`: "connecting",
   * "live", "reconnecting" or "offline"; `refresh()`: the session's refresh (true, false, throws);
   * `onExpired()`: the session is over.
   */
  constructor({ onSnapshot, onTask, onDeleted, onState, refresh, onExpired }) {
    Object.assign(this, { onSnapshot, onTask, onDeleted, onState, refresh, onExpired });
    this.source = null;
    this.lastEventId = null; // the last event applied: where a new source resumes
    this.delay = 0; // grows while the stream cannot be reopened, back to 0 once it opens
    this.timer = null;
    this.state = "closed";
    this.generation = 0; // one more at each open() and stop(): a resume begun before is dropped
    window.addEventListener("online", () => {
      if (this.timer !== null) this.resumeNow();
    });
  }

  /** Opens the stream: from the start (a snapshot) unless `fromLastEvent`. */
  open(fromLastEvent = false) {
    this.close();
    this.generation += 1;
    if (!fromLastEvent) this.lastEventId = null;
    const url = this.lastEventId === null
      ? "/api/events"
      : `/api/events?last_event_id=${encodeURIComponent(this.lastEventId)}`;
    const source = new EventSource(url);
    this.source = source;
    this.setState(this.state === "reconnecting" ? "reconnecting" : "connecting");
    // Events from a source this page has since replaced are ignored.
    source.addEventListener("open", () => {
      if (this.source !== source) return;
      this.delay = 0;
      this.setState("live");
    });
    source.addEventListener("snapshot", (event) => {
      if (this.source !== source) return;
      this.lastEventId = event.lastEventId;
      this.onSnapshot(JSON.parse(event.data));
    });
    source.addEventListener("task", (event) => {
      if (this.source !== source) return;
      this.lastEventId = event.lastEventId;
      this.onTask(JSON.parse(event.data));
    });
    source.addEventListener("deleted", (event) => {
      if (this.source !== source) return;
      this.lastEventId = event.lastEventId;
      this.onDeleted(JSON.parse(event.data));
    });
    source.addEventListener("batch", (event) => {
      if (this.source !== source) return;
      this.lastEventId = event.lastEventId;
    });
    source.addEventListener("error", () => {
      if (this.source !== source) return;
      if (source.readyState === EventSource.CLOSED) this.scheduleResume();
      else this.setState("reconnecting"); // EventSource retries by itself with Last-Event-ID
    });
  }

  close() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.source !== null) {
      this.source.close();
      this.source = null;
    }
  }

  /** Stops for good (signed out). */
  stop() {
    this.close();
    this.generation += 1;
    this.lastEventId = null;
    this.delay = 0;
    this.setState("closed");
  }

  scheduleResume() {
    this.close();
    if (this.state !== "offline") this.setState("reconnecting");
    const delay = this.delay;
    this.delay = Math.min(Math.max(delay * 2, 1000), MAX_RECONNECT_DELAY_MS);
    this.timer = setTimeout(() => this.resumeNow(), delay);
  }

  async resumeNow() {
    clearTimeout(this.timer);
    this.timer = null;
    const generation = this.generation;
    let refreshed;
    try {
      refreshed = await this.refresh();
    } catch {
      if (generation !== this.generation) return;
      this.setState("offline");
      this.scheduleResume();
      return;
    }
    // stopped (signed out), or opened afresh (signed in again) while the refresh was out
    if (generation !== this.generation) return;
    if (refreshed) this.open(true);
    else this.onExpired();
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }
}
