// typing.js — the "x is typing…" line under the feed. Each typing event shows the name
// for a few seconds; a message from that person (or leaving) removes it at once.

export class TypingIndicator {
  constructor(node, showForMs) {
    this.node = node;
    this.showForMs = showForMs;
    this.timers = new Map(); // username -> timeout
  }

  saw(user) {
    clearTimeout(this.timers.get(user));
    this.timers.set(user, setTimeout(() => this.stop(user), this.showForMs));
    this.render();
  }

  stop(user) {
    if (!this.timers.has(user)) return;
    clearTimeout(this.timers.get(user));
    this.timers.delete(user);
    this.render();
  }

  clear() {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.render();
  }

  render() {
    const names = [...this.timers.keys()];
    if (names.length === 0) this.node.textContent = '';
    else if (names.length === 1) this.node.textContent = `${names[0]} is typing…`;
    else if (names.length === 2) this.node.textContent = `${names[0]} and ${names[1]} are typing…`;
    else this.node.textContent = 'Several people are typing…';
  }
}
