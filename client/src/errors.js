// Errors: what the client throws and rejects with, and how it reports
// an exception from the application's own callbacks without stopping.

/**
 * MergeError reports a merge that failed. kind says why, with the names
 * of the shared test vectors: "invalid" (not JSON), "type" (JSON of the
 * wrong shape or missing a member), "op" (unknown list type or delta op),
 * "path" (a delta path that cannot be applied), "gap" (a delta whose
 * version does not follow the current one: refetch) or "depth".
 */
export class MergeError extends Error {
  /**
   * @param {"invalid"|"type"|"op"|"path"|"gap"|"depth"} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super(message);
    this.name = "MergeError";
    this.kind = kind;
  }
}

/**
 * LiveError reports a failure of the connection, of a publish or of a
 * request: code is the hub's error code ("forbidden", "rate_limited", …),
 * or "closed", "disconnected", "timeout", "queue_full", "http", "conflict"
 * and "network" from this client. status and body are set for HTTP
 * failures.
 */
export class LiveError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{channel?: string, status?: number, body?: any}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "LiveError";
    this.code = code;
    if (extra.channel !== undefined) this.channel = extra.channel;
    if (extra.status !== undefined) this.status = extra.status;
    if (extra.body !== undefined) this.body = extra.body;
  }
}

/** Reports an exception from application code without stopping the client. */
export function report(err) {
  if (typeof reportError === "function") {
    reportError(err);
  } else {
    setTimeout(() => {
      throw err;
    });
  }
}

export function call(fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    report(e);
  }
}
