// Task states as the page groups and names them: waiting, running, finished, retryable.

export const QUEUED = new Set(["PENDING", "RETRY"]);
export const RUNNING = new Set(["STARTED", "PROGRESS"]);
export const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED"]);
export const RETRYABLE = new Set(["FAILURE", "REVOKED"]);
export const LABEL = {
  PENDING: "queued", RETRY: "queued again", STARTED: "starting", PROGRESS: "running",
  SUCCESS: "done", FAILURE: "failed", REVOKED: "cancelled",
};
