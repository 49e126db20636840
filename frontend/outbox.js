// outbox.js — messages the user sent that the server has not acknowledged yet.
// Each has a random client_id; re-sending with the same id is safe (the server stores it
// once), so the whole outbox is re-sent after every reconnect. Kept in sessionStorage so
// a reload of the tab loses nothing either.

export function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16)); // fallback for plain-http hosts
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class Outbox {
  constructor(username) {
    this.key = `chatroom.outbox.${username.toLowerCase()}`;
    this.entries = new Map(); // client_id -> {room, text, client_id}
    this.load();
  }

  add(room, text) {
    const entry = { room, text, client_id: newClientId() };
    this.entries.set(entry.client_id, entry);
    this.save();
    return entry;
  }

  get(clientId) {
    return this.entries.get(clientId);
  }

  /** Removes an entry; returns whether it was there. */
  remove(clientId) {
    if (!clientId || !this.entries.delete(clientId)) return false;
    this.save();
    return true;
  }

  clear() {
    this.entries.clear();
    this.save();
  }

  all() {
    return [...this.entries.values()];
  }

  load() {
    try {
      for (const entry of JSON.parse(sessionStorage.getItem(this.key) || '[]')) {
        if (entry && entry.client_id && entry.room && entry.text) this.entries.set(entry.client_id, entry);
      }
    } catch {
      // a damaged or unavailable store: start empty
    }
  }

  save() {
    try {
      sessionStorage.setItem(this.key, JSON.stringify(this.all()));
    } catch {
      // storage full or disabled: the outbox still lives in memory
    }
  }
}
