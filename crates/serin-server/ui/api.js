// The API client: the token kept in sessionStorage (this tab only, gone when it closes),
// sent as `Authorization: Bearer`, never in a URL. Any 401 forgets the token and sends the
// user back to sign-in with the server's message.

const KEY = 'serin.token';
let onSignedOut = () => {};

export function token() {
  return sessionStorage.getItem(KEY);
}

export function signIn(t) {
  sessionStorage.setItem(KEY, t.trim());
}

export function signOut(message) {
  sessionStorage.removeItem(KEY);
  onSignedOut(message || '');
}

export function whenSignedOut(f) {
  onSignedOut = f;
}

/** Thrown for every non-2xx answer; carries the server's error body. */
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `the server answered ${status}`);
    this.status = status;
    this.code = e.code || 'http_' + status;
    this.field = e.field;
    this.details = e.details;
  }
}

async function body(resp) {
  const type = resp.headers.get('content-type') || '';
  if (type.startsWith('application/json')) {
    return resp.json();
  }
  return resp.text();
}

/** `method path` with a JSON body; resolves to the JSON answer or throws ApiError. */
export async function api(method, path, payload) {
  const headers = { Authorization: `Bearer ${token()}` };
  const init = { method, headers, cache: 'no-store', referrerPolicy: 'no-referrer' };
  if (payload !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(payload);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: { code: 'network', message: `cannot reach the server: ${e.message}` } });
  }
  const data = await body(resp).catch(() => null);
  if (resp.status === 401) {
    const err = new ApiError(401, data);
    signOut(`Signed out: ${err.message}`);
    throw err;
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, data);
  }
  return data;
}

/** Splits an SSE byte stream into events (`event`, `data`, `id`); comments are dropped. */
export function sseParser(onEvent) {
  let buffer = '';
  let event = { event: 'message', data: [] };
  return (chunk) => {
    buffer += chunk;
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A CR ending the chunk may be the first half of a CRLF: wait for the next chunk.
      if (nl === buffer.length - 1 && buffer[nl] === '\r') break;
      const line = buffer.slice(0, nl);
      const sep = buffer.startsWith('\r\n', nl) ? 2 : 1;
      buffer = buffer.slice(nl + sep);
      if (line === '') {
        if (event.data.length) {
          onEvent({ event: event.event, data: event.data.join('\n') });
        }
        event = { event: 'message', data: [] };
      } else if (!line.startsWith(':')) {
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let value = i < 0 ? '' : line.slice(i + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') event.event = value;
        if (field === 'data') event.data.push(value);
      }
    }
  };
}

/**
 * Follows an SSE route with fetch (EventSource cannot send the Authorization header), parsing
 * the body as it arrives. Reconnects with backoff (1 s doubling to 30 s) until `signal`
 * aborts; a 401 signs out; other refusals are reported to `onError` and retried.
 */
export function follow(path, handlers, signal) {
  const { onEvent, onError, onOpen } = handlers;
  let delay = 1000;
  const run = async () => {
    while (!signal.aborted) {
      try {
        const resp = await fetch(path, {
          headers: { Authorization: `Bearer ${token()}`, Accept: 'text/event-stream' },
          cache: 'no-store',
          referrerPolicy: 'no-referrer',
          signal,
        });
        if (resp.status === 401) {
          const data = await body(resp).catch(() => null);
          signOut(`Signed out: ${new ApiError(401, data).message}`);
          return;
        }
        if (!resp.ok) {
          const data = await body(resp).catch(() => null);
          const err = new ApiError(resp.status, data);
          onError(err);
          if (resp.status === 404 || resp.status === 403) return;
        } else {
          onOpen && onOpen();
          delay = 1000;
          const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
          const feed = sseParser((ev) => {
            let data = null;
            try {
              data = JSON.parse(ev.data);
            } catch (_) {
              return;
            }
            if (ev.event === 'error') onError(new ApiError(200, data));
            else onEvent(ev.event, data);
          });
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            feed(value);
          }
          // The server ended the stream (a revoked token, a shutdown): ask again, which
          // answers 401 if the token is gone.
        }
      } catch (e) {
        if (signal.aborted) return;
        onError(new ApiError(0, { error: { code: 'network', message: `connection lost: ${e.message}` } }));
      }
      await new Promise((r) => setTimeout(r, delay * (0.8 + Math.random() * 0.4)));
      delay = Math.min(delay * 2, 30000);
    }
  };
  run();
}
