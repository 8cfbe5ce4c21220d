// What the customer chat and the agent console share: a few DOM helpers and
// the transcript that draws a conversation. Everything about the server (the
// REST calls and their tokens, the self-healing socket, taking each event
// exactly once and in seq order) is the client SDK's, which the server serves
// at /sdk/chatbot-server-client.js.

/** `document.createElement` with a class and text. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function clockTime(iso) {
  const d = iso ? new Date(iso) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "45s", "3m 05s", "1h 02m". */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** "today at 09:00", "tomorrow at 09:00" or "on Mon 14 Dec at 09:00", in
 * this browser's time zone. */
export function openingText(iso) {
  const at = new Date(iso);
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((day(at) - day(new Date())) / 86400000);
  if (days === 0) return `today at ${time}`;
  if (days === 1) return `tomorrow at ${time}`;
  const date = at.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
  return `on ${date} at ${time}`;
}

/**
 * Tells the other side while this user types: `send(true)` on the first
 * keystroke and again every 2 s while typing goes on (the server passes at
 * most one a second), `send(false)` 3 s after the last keystroke or when the
 * message is sent. `send` returns whether it went out.
 */
export class TypingSender {
  constructor(send) {
    this.send = send;
    this.on = false;
    this.last = 0;
    this.timer = null;
  }

  typed() {
    const now = Date.now();
    if ((!this.on || now - this.last > 2000) && this.send(true)) {
      this.on = true;
      this.last = now;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.stop(), 3000);
  }

  stop() {
    clearTimeout(this.timer);
    if (this.on) {
      this.on = false;
      this.send(false);
    }
  }
}

/** A user's token budget as a short line: "Tokens: 1,834 of 50,000 · resets
 * 00:00", or only the count without a budget. */
export function quotaText(q) {
  if (!q) return "";
  const n = (v) => Number(v).toLocaleString();
  if (q.limit === null || q.limit === undefined) return `Tokens used: ${n(q.used)}`;
  const left = Math.max(0, q.limit - q.used);
  const resets = q.resetsAt ? ` · resets ${clockTime(q.resetsAt)}` : "";
  return `Tokens: ${n(q.used)} of ${n(q.limit)} (${n(left)} left)${resets}`;
}

/**
 * One conversation on screen, drawn from the events the SDK hands over
 * (each exactly once, in seq order).
 *
 * `viewer` is "customer" or "agent": it decides which side each message sits
 * on. `names.customer` labels the customer's messages for an agent;
 * `names.selfId` is the agent's own id.
 */
export class Transcript {
  /**
   * `actions` (the customer's page only) lets the answers' thumbs send a
   * rating: `actions.rate(messageId, rating, comment)`.
   */
  constructor(list, viewer, names = {}, actions = null) {
    this.list = list;
    this.viewer = viewer;
    this.names = names;
    this.actions = actions;
    this.reset();
  }

  /** Forget what is shown. */
  reset() {
    this.list.replaceChildren();
    this.answers = new Map();
    /** The latest answer to each user message, by the user message's id. */
    this.replies = new Map();
    this.gap = null;
  }

  /** The log no longer holds the earliest events (`history-lost`). */
  lost() {
    if (!this.gap) this.gap = this.notice("Earlier messages are no longer available.", "warn");
  }

  /** Shows messages the log no longer held (the SDK's `earlier` entries,
   * from the transcript, oldest first) above everything else. */
  prependEarlier(entries) {
    const customer = this.viewer === "customer";
    const nodes = entries.map((e) => {
      if (e.role === "user") {
        return this.bubble("user", customer, customer ? "You" : this.names.customer || "Customer", e.content, e);
      }
      if (e.role === "agent") {
        const mine = !customer && e.agent && e.agent.id === this.names.selfId;
        return this.bubble("agent", mine, `${(e.agent && e.agent.username) || "An agent"} · agent`, e.content, e);
      }
      const li = this.bubble("bot", false, "Assistant", e.text, e);
      if (e.superseded) this.supersede(li);
      if (e.feedback) this.showRating(li, e.feedback);
      this.rateable(li, e.messageId);
      return li;
    });
    if (!nodes.length) return;
    this.list.prepend(...nodes);
    if (this.gap) this.gap.remove();
    this.gap = null;
  }

  nearBottom() {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
  }

  append(node) {
    const stick = this.nearBottom();
    this.list.append(node);
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  message(kind, mine, label, text, m) {
    const li = this.bubble(kind, mine, label, text, m);
    this.append(li);
    return li;
  }

  bubble(kind, mine, label, text, m) {
    const li = el("li", `msg ${kind} ${mine ? "mine" : "theirs"}`);
    if (m.messageId) li.dataset.messageId = m.messageId;
    li.dataset.seq = m.seq;
    if (label) li.append(el("span", "who-line", `${label} · ${clockTime(m.timestamp)}`));
    const bubble = el("div", "bubble");
    const body = el("span", "text", text);
    bubble.append(body);
    li.append(bubble);
    return li;
  }

  /** Marks an answer replaced by a regenerated one. */
  supersede(li) {
    if (li.classList.contains("superseded")) return;
    li.classList.add("superseded");
    li.append(el("span", "tag", "Replaced by a new answer"));
  }

  /** Gives an ended answer its thumbs (on the customer's page). */
  rateable(li, messageId) {
    if (!this.actions || li.querySelector(".rating")) return;
    const row = el("div", "rating");
    const thumb = (rating, glyph, label) => {
      const b = el("button", `thumb ${rating}`, glyph);
      b.type = "button";
      b.title = label;
      b.setAttribute("aria-label", label);
      b.dataset.rating = rating;
      b.addEventListener("click", () => this.actions.rate(messageId, rating));
      return b;
    };
    const note = el("button", "link small comment", "Add a comment");
    note.type = "button";
    note.hidden = true;
    note.addEventListener("click", () => this.commentForm(li, messageId));
    row.append(thumb("up", "👍", "Good answer"), thumb("down", "👎", "Bad answer"), note);
    li.append(row);
  }

  /** An inline form that sends the answer's rating again with a comment. */
  commentForm(li, messageId) {
    if (li.querySelector("form.comment-form")) return;
    const form = el("form", "comment-form");
    const input = el("input");
    input.maxLength = 1000;
    input.placeholder = "What was good or wrong about it?";
    input.setAttribute("aria-label", "Comment on the answer");
    const save = el("button", "secondary small", "Send");
    save.type = "submit";
    form.append(input, save);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.actions.rate(messageId, li.dataset.rating || "up", input.value.trim() || null);
      form.remove();
    });
    li.append(form);
    input.focus();
  }

  /** Shows an answer's latest rating: the pressed thumb, or (for an agent) a tag. */
  showRating(li, feedback) {
    li.dataset.rating = feedback.rating;
    for (const b of li.querySelectorAll(".thumb")) {
      b.classList.toggle("pressed", b.dataset.rating === feedback.rating);
    }
    const note = li.querySelector(".comment");
    if (note) note.hidden = false;
    let tag = li.querySelector(".tag.feedback");
    if (!tag) {
      tag = el("span", "tag feedback");
      li.append(tag);
    }
    const glyph = feedback.rating === "up" ? "👍" : "👎";
    const who = this.viewer === "customer" ? "You rated it" : "Rated";
    tag.textContent = `${who} ${glyph}${feedback.comment ? `: “${feedback.comment}”` : ""}`;
  }

  /** "How did it go?" with five stars and a comment, after a resolve. */
  csatPrompt(m) {
    const li = el("li", "notice csat");
    li.dataset.type = m.type;
    const name = (m.agent && m.agent.username) || "the agent";
    li.append(el("span", "", `How was your conversation with ${name}? `));
    const comment = el("input", "csat-comment");
    comment.maxLength = 1000;
    comment.placeholder = "Anything to add? (optional)";
    comment.setAttribute("aria-label", "Comment on the conversation");
    for (let rating = 1; rating <= 5; rating += 1) {
      const b = el("button", "star", "★");
      b.type = "button";
      b.dataset.rating = String(rating);
      b.title = `${rating} of 5`;
      b.setAttribute("aria-label", `${rating} of 5`);
      b.addEventListener("click", () => this.actions.csat(rating, comment.value.trim() || null));
      li.append(b);
    }
    li.append(comment, el("span", "csat-said", ""));
    this.csatBox = li;
    this.append(li);
  }

  notice(text, tone = "", m = {}) {
    const li = el("li", `notice ${tone}`.trim(), text);
    if (m.type) li.dataset.type = m.type;
    this.append(li);
    return li;
  }

  render(m) {
    this.show(m);
    this.previous = m.type;
  }

  /** An answer's part beside its text: "Thinking…" while the model
   * reasons (its reasoning, when the server relays it, folded away), and a
   * line per tool call. */
  answerPart(li, m) {
    if (!li) return;
    const stick = this.nearBottom();
    if (m.type === "stream-status" && m.status === "thinking" && !li.querySelector(".text").textContent) {
      if (!li.querySelector(".thinking")) li.querySelector(".bubble").prepend(el("span", "thinking", "Thinking…"));
    } else if (m.type === "stream-reasoning") {
      let box = li.querySelector("details.reasoning");
      if (!box) {
        box = el("details", "reasoning");
        box.append(el("summary", "", "Reasoning"), el("span", "reasoning-text", ""));
        li.querySelector(".bubble").prepend(box);
      }
      box.querySelector(".reasoning-text").textContent += m.token;
    } else if (m.type === "tool-activity") {
      let tools = li.querySelector(".tools");
      if (!tools) {
        tools = el("ul", "tools");
        li.querySelector(".bubble").before(tools);
      }
      const id = CSS.escape(m.toolCallId);
      let line = tools.querySelector(`[data-call="${id}"]`);
      if (!line) {
        line = el("li", "tool");
        line.dataset.call = m.toolCallId;
        tools.append(line);
      }
      line.dataset.state = m.state;
      const done = m.state === "finished";
      line.textContent = `${done ? "✓" : "⚙"} ${m.name}${done ? "" : " …"}`;
      if (m.arguments) line.title = m.arguments;
    }
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  /** What the answer cost, under it: "31 tokens (estimated)". */
  answerEnded(li, m) {
    if (!li) return;
    li.querySelector(".thinking")?.remove();
    const u = m.usage;
    if (!u) return;
    const reasoning = u.reasoningTokens ? `, ${u.reasoningTokens} reasoning` : "";
    const line = el("span", "usage", `${u.totalTokens} tokens${reasoning}${u.estimated ? " (estimated)" : ""}`);
    line.title = `prompt ${u.promptTokens} · completion ${u.completionTokens}`;
    li.append(line);
  }

  show(m) {
    const agentName = (a) => (a && a.username) || "An agent";
    const customer = this.viewer === "customer";
    switch (m.type) {
      case "user-message":
        this.message("user", customer, customer ? "You" : this.names.customer || "Customer", m.content, m);
        break;
      case "stream-start": {
        // A regenerated answer replies to the same message as the one it replaces.
        const earlier = this.replies.get(m.replyTo);
        if (earlier) this.supersede(earlier);
        const li = this.message("bot", false, "Assistant", "", m);
        li.classList.add("streaming");
        this.answers.set(m.messageId, li);
        this.replies.set(m.replyTo, li);
        break;
      }
      case "stream-token": {
        const li = this.answers.get(m.messageId);
        if (li) {
          li.querySelector(".thinking")?.remove();
          const stick = this.nearBottom();
          li.querySelector(".text").textContent += m.token;
          if (stick) this.list.scrollTop = this.list.scrollHeight;
        }
        break;
      }
      case "error": {
        const li = this.answers.get(m.messageId);
        const why = `${m.message}${m.retryable ? " You can send your message again." : ""}`;
        if (li) li.append(el("span", "tag bad", why));
        else this.notice(why, "warn", m);
        break;
      }
      case "stream-end": {
        const li = this.answers.get(m.messageId);
        if (li) {
          li.classList.remove("streaming");
          li.dataset.status = m.status;
          if (m.status === "cancelled") li.append(el("span", "tag", "Stopped"));
          if (!li.querySelector(".text").textContent) li.querySelector(".text").textContent = "…";
          this.rateable(li, m.messageId);
        }
        this.answerEnded(li, m);
        break;
      }
      case "feedback": {
        const li = this.answers.get(m.messageId) || this.list.querySelector(`[data-message-id="${CSS.escape(m.messageId)}"]`);
        if (li) this.showRating(li, m);
        break;
      }
      case "stream-status":
      case "stream-reasoning":
      case "tool-activity":
        this.answerPart(this.answers.get(m.messageId), m);
        break;
      case "agent-message": {
        const mine = !customer && m.agent && m.agent.id === this.names.selfId;
        this.message("agent", mine, `${agentName(m.agent)} · agent`, m.content, m);
        break;
      }
      case "handoff-queued":
        // After `agent-left` (a release), the notice just shown says it all.
        if (this.previous === "agent-left") break;
        // The reply just shown is the old clients' line; this one says more.
        if (this.previous === "human-escalation-response" && this.escalationReply) {
          this.escalationReply.remove();
        }
        this.notice(customer
          ? (m.agentsOnline > 0
            ? `You asked for a human. An agent will be with you shortly (${m.agentsOnline} online).`
            : "You asked for a human. No agent is online right now; you stay in the queue.")
          : "The customer asked for a human.", "warn", m);
        break;
      case "agent-joined":
        this.notice(`${agentName(m.agent)} joined the conversation.`, "good", m);
        break;
      case "agent-left":
        this.notice(`${agentName(m.agent)} left. ${customer ? "Waiting for another agent…" : "Back in the queue."}`, "warn", m);
        break;
      case "handoff-resolved":
        this.notice(`${agentName(m.agent)} marked the conversation resolved. The assistant is back.`, "good", m);
        break;
      case "handoff-timeout":
        this.notice("No agent was free in time. The assistant is back.", "warn", m);
        break;
      case "handoff-cancelled":
        this.notice(customer ? "You no longer wait for a human. The assistant is back." : "The customer cancelled the request.", "", m);
        break;
      case "human-escalation-response":
        // The server's own words: where handoff is not in use they are all
        // there is, and with nobody online they are HANDOFF_OFFLINE_MESSAGE.
        // In the queue, the `handoff-queued` notice right after says more.
        if (customer) this.escalationReply = this.notice(m.message, "", m);
        break;
      case "csat-request":
        if (customer && this.actions) this.csatPrompt(m);
        else if (!customer) this.notice("The customer was asked how it went.", "", m);
        break;
      case "csat": {
        const stars = `${"★".repeat(m.rating)}${"☆".repeat(5 - m.rating)}`;
        const said = m.comment ? `: “${m.comment}”` : "";
        if (customer && this.csatBox) {
          this.csatBox.querySelector(".csat-said").textContent = `You rated it ${stars}${said}. Thank you!`;
          for (const b of this.csatBox.querySelectorAll(".star")) b.classList.toggle("pressed", Number(b.dataset.rating) <= m.rating);
        } else {
          this.notice(`${customer ? "You rated" : "The customer rated"} the conversation ${stars}${said}`, "good", m);
        }
        break;
      }
      case "handoff-unavailable":
        if (customer && m.reason === "closed" && m.opensAt) {
          this.notice(`Agents are back ${openingText(m.opensAt)}.`, "", m);
        } else if (!customer) {
          this.notice(m.reason === "closed"
            ? "The customer asked for a human outside office hours."
            : "The customer asked for a human; no agent was online.", "warn", m);
        }
        break;
      default:
        // `handoff-waiting` and `queue-position` change the banner only: a
        // notice each would bury the conversation.
        break;
    }
  }
}
