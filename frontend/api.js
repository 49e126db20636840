// api.js — the one way the pages talk HTTP to the chat server: same-origin cookies,
// JSON bodies on every state-changing request, and server errors turned into ApiError
// (status + the server's `error.code` and human-readable `error.message`).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0 when the server could not be reached
    this.code = code;
  }
}

export async function api(method, path, body) {
  const options = {
    method,
    credentials: 'same-origin',
    headers: { Accept: 'application/json' },
  };
  if (method !== 'GET' && method !== 'HEAD') {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
  }
  const data = await readJson(response);
  if (!response.ok) {
    const error = data && data.error;
    throw new ApiError(
      response.status,
      (error && error.code) || `http_${response.status}`,
      (error && error.message) || `Request failed (${response.status}).`,
    );
  }
  return data;
}

async function readJson(response) {
  if (response.status === 204) return null;
  try {
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** Path segment for a room name (room names are plain, but never trust that). */
export function roomPath(room) {
  return encodeURIComponent(room);
}
