// unread.js — the user's read markers and unread counts, per room, as the server keeps
// them: a marker is the last message id read (it only moves forward, and every device of
// the user shares it); the unread count is the messages after it that are not the user's
// own and not deleted. The count starts as the server's (GET /api/subscriptions) and
// follows live events from there. Which messages it counts is known by id where the page
// saw them; a delete or a marker move it cannot settle by itself returns false, and the
// page asks the server again. Beside each count, how many of those messages concern the
// user (`mentions`: the server's count, bumped by `mention` frames, gone when nothing is
// unread). No DOM here: `onChange(room)` says a count changed.

export class ReadState {
  constructor(onChange) {
    this.onChange = onChange;
    this.rooms = new Map(); // room -> {read: number|undefined, count, ids: Set of counted ids, mentions}
  }

  room(name) {
    let room = this.rooms.get(name);
    if (!room) {
      room = { read: undefined, count: 0, ids: new Set(), mentions: 0 };
      this.rooms.set(name, room);
    }
    return room;
  }

  /** The user's read marker in a room (0: none), or undefined while unknown. */
  marker(name) {
    return this.rooms.get(name)?.read;
  }

  count(name) {
    return this.rooms.get(name)?.count ?? 0;
  }

  mentions(name) {
    return this.rooms.get(name)?.mentions ?? 0;
  }

  total(names) {
    let total = 0;
    for (const name of names) total += this.count(name);
    return total;
  }

  setCount(name, count) {
    const room = this.room(name);
    const mentions = count === 0 ? 0 : room.mentions; // nothing unread: nothing to point at
    const changed = room.count !== count || room.mentions !== mentions;
    room.count = count;
    room.mentions = mentions;
    if (changed) this.onChange(name);
  }

  /**
   * The server's word: `read`, `unread` and `mentions` (which messages those are is not
   * known here).
   */
  setCounted(name, read, unread, mentions) {
    const room = this.room(name);
    if (Number.isFinite(read)) room.read = Math.max(room.read ?? 0, read);
    room.ids.clear();
    if (Number.isFinite(mentions)) room.mentions = mentions;
    this.setCount(name, Number.isFinite(unread) ? unread : 0);
  }

  /** A message that concerns the user arrived where they are not reading. */
  mentioned(name) {
    this.room(name).mentions += 1;
    this.onChange(name);
  }

  /** Exactly these messages (ids after the marker) are unread. */
  setExact(name, ids) {
    const room = this.room(name);
    room.ids = new Set(ids.filter((id) => id > (room.read ?? 0)));
    this.setCount(name, room.ids.size);
  }

  /** Someone else's new message: unread if it is past the marker. */
  add(name, id) {
    const room = this.room(name);
    if (id <= (room.read ?? 0) || room.ids.has(id)) return;
    room.ids.add(id);
    this.setCount(name, room.count + 1);
  }

  /**
   * A message was deleted: no longer unread. False when it may have been one of the
   * counted messages the page never saw (the count must be asked for again).
   */
  remove(name, id) {
    const room = this.rooms.get(name);
    if (!room) return true;
    if (room.ids.delete(id)) {
      this.setCount(name, room.count - 1);
      return true;
    }
    return id <= (room.read ?? 0) || room.count === room.ids.size;
  }

  /**
   * The marker moved to `id` (another device read, or the server said so). `head`: the
   * room's last seq the page has seen. False when the count cannot be told from here.
   */
  advance(name, id, head) {
    const room = this.room(name);
    if (room.read !== undefined && id <= room.read) return true;
    room.read = id;
    const unseen = room.count - room.ids.size; // counted, but not by id
    for (const counted of room.ids) if (counted <= id) room.ids.delete(counted);
    if (unseen === 0 || (Number.isFinite(head) && id >= head)) {
      this.setCount(name, room.ids.size);
      return true;
    }
    this.setCount(name, room.ids.size + unseen);
    return false;
  }

  /** The user has read everything up to `id` here (and sees the room: nothing unread). */
  readUpTo(name, id) {
    const room = this.room(name);
    if (Number.isFinite(id)) room.read = Math.max(room.read ?? 0, id);
    this.clear(name);
  }

  /** Nothing unread here (the room is being read, or was left). */
  clear(name) {
    this.room(name).ids.clear();
    this.setCount(name, 0);
  }
}
