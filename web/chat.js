// The customer chat page: log in or register, chat with the assistant over
// /ws, ask for a human and talk to them, through the client SDK the server
// serves (its ChatClient resumes, resends and orders events by itself). The
// tokens and the session id are kept in localStorage, so a reload or a
// second tab resumes the same conversation, replayed from the server's log.

import { ApiError, Auth, ChatClient, StorageTokenStore } from "/sdk/chatbot-server-client.js";
import { Transcript, TypingSender, quotaText } from "./common.js";

const store = new StorageTokenStore("chatbot.customer");
const $ = (id) => document.getElementById(id);

const ui = {
  who: $("who"), status: $("status"), username: $("username"), logout: $("logout"),
  auth: $("auth"), authTitle: $("auth-title"), tabLogin: $("tab-login"), tabRegister: $("tab-register"),
  form: $("auth-form"), name: $("auth-username"), email: $("auth-email"), emailField: $("email-field"),
  password: $("auth-password"), authError: $("auth-error"), authSubmit: $("auth-submit"),
  chat: $("chat"), banner: $("banner"), bannerText: $("banner-text"), cancel: $("cancel-handoff"),
  messages: $("messages"), error: $("chat-error"), composer: $("composer"), input: $("input"),
  stop: $("stop"), send: $("send"), human: $("human"), regenerate: $("regenerate"),
  quota: $("quota"), typing: $("typing"),
};

/** What the answers' thumbs do. */
const actions = {
  rate(messageId, rating, comment = null) {
    if (client) client.feedback(messageId, rating, comment);
  },
  csat(rating, comment = null) {
    if (client) client.csat(rating, comment);
  },
};

let registering = false;
/** The SDK's client while logged in. */
let client = null;
let transcript = new Transcript(ui.messages, "customer", {}, actions);
let who = { mode: "bot", agent: null };
let errorTimer = null;
/** Whether the agent is typing, as last told (the server says `false` after
 * 5 s without news; the timer covers a socket that went quiet). */
let agentTyping = false;
let agentTypingTimer = null;
/** Tells the agent while the customer types (only to an agent holding it). */
const typist = new TypingSender((state) => Boolean(client && client.typing(state)));

const sessionKey = () => `chatbot.customer.session.${(store.get() || {}).user?.id}`;
/** The conversation's id, per user, for the SDK to resume. */
const sessionStore = {
  get: () => localStorage.getItem(sessionKey()),
  set: (id) => (id ? localStorage.setItem(sessionKey(), id) : localStorage.removeItem(sessionKey())),
};

function showAuth(message) {
  if (client) client.close();
  client = null;
  ui.chat.hidden = true;
  ui.who.hidden = true;
  ui.auth.hidden = false;
  ui.authError.hidden = !message;
  ui.authError.textContent = message || "";
  ui.name.focus();
}

function setRegistering(on) {
  registering = on;
  ui.tabLogin.classList.toggle("active", !on);
  ui.tabRegister.classList.toggle("active", on);
  ui.emailField.hidden = !on;
  ui.email.required = on;
  ui.password.autocomplete = on ? "new-password" : "current-password";
  ui.authSubmit.textContent = on ? "Create account" : "Log in";
  ui.authTitle.textContent = on ? "Create your account" : "Welcome back";
  $("username-label").textContent = on ? "Username" : "Username or email";
  ui.authError.hidden = true;
}

async function submitAuth(ev) {
  ev.preventDefault();
  ui.authSubmit.disabled = true;
  ui.authError.hidden = true;
  // A login of its own: the chat's client starts once it is done.
  const auth = new Auth({ tokens: store });
  try {
    if (registering) await auth.register(ui.name.value.trim(), ui.email.value.trim(), ui.password.value);
    else await auth.login(ui.name.value.trim(), ui.password.value);
    auth.close();
    ui.password.value = "";
    showChat();
  } catch (e) {
    ui.authError.textContent = explain(e);
    ui.authError.hidden = false;
  } finally {
    auth.close();
    ui.authSubmit.disabled = false;
  }
}

/** A refusal as a person should read it, with its code for support. */
function explain(e) {
  if (!(e instanceof ApiError)) return String(e);
  return e.code === "network_error" ? e.message : `${e.message} (${e.code})`;
}

function showChat() {
  const saved = store.get();
  if (!saved) return showAuth();
  ui.auth.hidden = true;
  ui.chat.hidden = false;
  ui.who.hidden = false;
  ui.username.textContent = saved.user.username;
  transcript = new Transcript(ui.messages, "customer", {}, actions);
  who = { mode: "bot", agent: null };
  client = new ChatClient({ tokens: store, sessionStore });
  client.on("state", ({ state }) => {
    ui.status.textContent = state === "open" ? "Online" : "Reconnecting…";
    ui.status.className = `pill ${state === "open" ? "online" : "offline"}`;
    refreshControls();
  });
  client.on("auth-lost", (e) => {
    store.set(null);
    showAuth(`Your session ended: ${e.message}`);
  });
  client.on("reset", () => transcript.reset());
  client.on("connected", () => refreshControls());
  client.on("handoff", (h) => {
    who = h;
    refreshControls();
  });
  client.on("quota", showQuota);
  client.on("history-lost", () => transcript.lost());
  client.on("earlier", (entries) => transcript.prependEarlier(entries));
  client.on("event", (e) => {
    transcript.render(e);
    if (e.type === "agent-message" || e.type === "handoff-resolved" || e.type === "agent-left") agentTyping = false;
    refreshControls();
  });
  client.on("error", (m) => {
    // An error that ended an answer is drawn with it (an event).
    if (typeof m.seq !== "number") showError(m);
  });
  client.on("typing", (m) => {
    agentTyping = m.state;
    clearTimeout(agentTypingTimer);
    if (m.state) agentTypingTimer = setTimeout(() => { agentTyping = false; refreshControls(); }, 7000);
    refreshControls();
  });
  client.connect().catch(() => {
    // auth-lost already showed the login form.
  });
  refreshControls();
  ui.input.focus();
}

/** Who is typing: the assistant while its answer streams (from the stream
 * itself), or the agent holding the conversation while they type. */
function showTyping() {
  let text = "";
  if (who.mode === "bot" && client && client.conversation.running !== null) text = "The assistant is typing";
  else if (who.mode === "assigned" && agentTyping) text = `${(who.agent && who.agent.username) || "The agent"} is typing`;
  ui.typing.textContent = text;
  ui.typing.hidden = !text;
}

/** The budget line under the composer; a replayed or late one older than
 * what is shown (an earlier window) is ignored. */
let shownQuota = null;
function showQuota(q) {
  if (!q) return;
  if (shownQuota && shownQuota.resetsAt && q.resetsAt && q.resetsAt < shownQuota.resetsAt) return;
  shownQuota = q;
  ui.quota.textContent = quotaText(q);
  ui.quota.hidden = false;
  ui.quota.classList.toggle("bad", q.limit !== null && q.limit !== undefined && q.used >= q.limit);
}

function showError(m) {
  const wait = m.retryAfterMs ? ` Try again in ${Math.ceil(m.retryAfterMs / 1000)} s.` : "";
  const resets = m.resetsAt ? ` (resets ${new Date(m.resetsAt).toLocaleString()})` : "";
  ui.error.textContent = `${m.message}${wait}${resets} (${m.code})`;
  ui.error.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { ui.error.hidden = true; }, 8000);
}

function refreshControls() {
  const open = Boolean(client && client.connected);
  const conversation = client ? client.conversation : null;
  const bot = who.mode === "bot";
  const answering = bot && conversation !== null && conversation.running !== null;
  ui.stop.hidden = !answering;
  ui.send.disabled = !open || answering;
  ui.human.hidden = !bot;
  ui.human.disabled = !open;
  ui.regenerate.hidden = !bot || answering || !conversation || conversation.lastAnswer === null;
  ui.regenerate.disabled = !open;
  ui.cancel.hidden = who.mode !== "queued";
  showTyping();
  ui.banner.hidden = bot;
  ui.banner.className = `banner ${who.mode}`;
  if (who.mode === "queued") {
    ui.bannerText.textContent = `Waiting for a human agent…${placeInLine(who)} You can keep writing; they will see it.`;
    ui.input.placeholder = "Write to the agent who picks this up…";
  } else if (who.mode === "assigned") {
    const name = (who.agent && who.agent.username) || "an agent";
    ui.bannerText.textContent = `You are chatting with ${name}, a support agent.`;
    ui.input.placeholder = `Message ${name}…`;
  } else {
    ui.input.placeholder = "Ask the assistant…";
  }
}

/** " You are next in line." once the server said where the customer stands,
 * with the estimated wait once there is one. */
function placeInLine(w) {
  if (!w.position) return "";
  const place = w.position === 1 ? "next" : `number ${w.position}`;
  const online = w.agentsOnline === 0 ? " No agent is online yet." : "";
  const wait = typeof w.estimatedWaitSeconds === "number"
    ? ` Estimated wait: ${waitText(w.estimatedWaitSeconds)}.`
    : "";
  return ` You are ${place} in line.${wait}${online}`;
}

function waitText(seconds) {
  if (seconds < 60) return "under a minute";
  const minutes = Math.round(seconds / 60);
  return minutes === 1 ? "about a minute" : `about ${minutes} minutes`;
}

function sendChat(ev) {
  ev.preventDefault();
  const content = ui.input.value.trim();
  if (!content || ui.send.disabled) return;
  // Resent after a reconnect until the server acknowledges it; a refusal
  // comes as an `error` event.
  client.send(content);
  typist.stop();
  ui.input.value = "";
  grow();
}

function grow() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 160)}px`;
}

ui.tabLogin.addEventListener("click", () => setRegistering(false));
ui.tabRegister.addEventListener("click", () => setRegistering(true));
ui.form.addEventListener("submit", submitAuth);
ui.composer.addEventListener("submit", sendChat);
ui.input.addEventListener("input", () => {
  grow();
  if (who.mode === "assigned" && ui.input.value.trim()) typist.typed();
});
ui.input.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) sendChat(ev);
});
ui.stop.addEventListener("click", () => client && client.stop());
ui.human.addEventListener("click", () => client && client.escalate());
ui.regenerate.addEventListener("click", () => client && client.regenerate());
ui.cancel.addEventListener("click", () => client && client.cancelHandoff());
ui.logout.addEventListener("click", async () => {
  const leaving = client;
  client = null;
  // Closes the socket, forgets the session id and revokes the tokens.
  if (leaving) await leaving.logout();
  else store.set(null);
  showAuth();
});
// Another tab logged in or out.
window.addEventListener("storage", (ev) => {
  if (ev.key !== store.key) return;
  if (!ev.newValue && client) showAuth("You logged out in another tab.");
  else if (ev.newValue && !client) showChat();
});

if (store.get()) showChat();
else showAuth();
