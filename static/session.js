// The signed-in session: JSON requests, the token refresh (ahead of expiry and after a 401), and
// the server's clock. The tokens live in HttpOnly cookies (kiln_token for every route, kiln_refresh
// for /api/auth); this script never sees or stores one.

const REFRESH_AT = 0.75; // of a token's lifetime
const REFRESH_RETRY_MS = 5000;

/** The message of a JSON error answer `{"error","message"}`, else the status line. */
export async function errorBody(response) {
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") return body;
  } catch {
    // not JSON: fall through to the status line
  }
  return {
    error: `http_${response.status}`,
    message: `The server answered ${response.status} ${response.statusText}`.trim(),
  };
}

export class Session {
  /** `onExpired(message)` is called once the session cannot be refreshed any more. */
  constructor({ onExpired }) {
    this.onExpired = onExpired;
    this.clockOffsetMs = 0; // server clock minus this machine's, from the Date header
    this.refreshing = null; // the refresh in flight: concurrent callers share it
    this.refreshTimer = null;
  }

  /** Seconds since the epoch by the server's clock (task timestamps are the server's). */
  now() {
    return (Date.now() + this.clockOffsetMs) / 1000;
  }

  noteClock(response) {
    const served = Date.parse(response.headers.get("Date") || "");
    // the Date header has a one-second resolution: only a larger skew is worth correcting
    if (!Number.isNaN(served) && Math.abs(served - Date.now()) > 1500) {
      this.clockOffsetMs = served - Date.now();
    }
  }

  request(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    return fetch(path, init);
  }

  /** A request that survives an expired token: one refresh, then one more try. */
  async call(method, path, body) {
    const response = await this.request(method, path, body);
    if (response.status !== 401) return response;
    if (await this.refresh()) return this.request(method, path, body);
    this.expired();
    return response;
  }

  /**
   * True with fresh cookies; false when the session is over (401: sign in again); throws when
   * the server cannot say (network down, 5xx), so the caller can try again later.
   */
  refresh() {
    if (this.refreshing === null) {
      this.refreshing = (async () => {
        try {
          const response = await this.request("POST", "/api/auth/refresh");
          if (response.ok) {
            this.noteClock(response);
            this.planRefresh((await response.json()).expires_in);
            return true;
          }
          if (response.status === 401) return false;
          throw new Error((await errorBody(response)).message);
        } finally {
          this.refreshing = null;
        }
      })();
    }
    return this.refreshing;
  }

  expired() {
    this.stopRefreshTimer();
    this.onExpired("Your session has ended: sign in again.");
  }

  planRefresh(secondsLeft) {
    this.stopRefreshTimer();
    const delay = Math.max(1, secondsLeft * REFRESH_AT) * 1000;
    this.refreshTimer = setTimeout(() => this.refreshAhead(), delay);
  }

  async refreshAhead() {
    this.refreshTimer = null;
    try {
      if (!(await this.refresh())) this.expired();
    } catch {
      this.refreshTimer = setTimeout(() => this.refreshAhead(), REFRESH_RETRY_MS);
    }
  }

  stopRefreshTimer() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
  }
}
