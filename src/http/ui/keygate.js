// Keygate's hosted pages: log in, create an account, manage the account.
//
// They use the cookie transport (API.md § Cookie transport): the refresh token lives in the
// HttpOnly cookie keygate_refresh, which no script can read; the access token lives in the
// variable below and nowhere else (no storage, no cookie), so it is fetched again from the
// cookie when a page loads and after a 401. Every request that the refresh cookie
// authenticates echoes the readable keygate_csrf cookie in the X-CSRF-Token header.
"use strict";

let accessToken = null; // in memory only

const byId = (id) => document.getElementById(id);

function csrf() {
  return document.cookie.split("; ").find((c) => c.startsWith("keygate_csrf="))?.slice(13) ?? "";
}

// One API call. Never throws: a network failure is status 0.
async function call(method, path, { body, bearer = false, csrfHeader = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (bearer && accessToken) headers.authorization = `Bearer ${accessToken}`;
  if (csrfHeader) headers["x-csrf-token"] = csrf();
  let r;
  try {
    r = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { ok: false, status: 0, data: {}, retryAfter: 0 };
  }
  let data = {};
  if (r.status !== 204) {
    try { data = (await r.json()) ?? {}; } catch { data = {}; }
  }
  return { ok: r.ok, status: r.status, data, retryAfter: Number(r.headers.get("retry-after")) || 0 };
}

// A new access token from the refresh cookie (which rotates).
async function refresh() {
  const r = await call("POST", "/auth/refresh", { csrfHeader: true });
  accessToken = r.ok ? r.data.access_token : null;
  return r;
}

// A call with the access token; after a 401 the token is refreshed once and the call repeated.
async function authed(method, path, body) {
  let r = await call(method, path, { body, bearer: true });
  if (r.status === 401) {
    const renewed = await refresh();
    if (renewed.status === 401) return toLogin();
    if (!renewed.ok) return renewed;
    r = await call(method, path, { body, bearer: true });
  }
  return r;
}

function toLogin() {
  const here = location.pathname + location.search;
  location.assign(`/ui/login?return_to=${encodeURIComponent(here)}`);
  return new Promise(() => {}); // the page is going away
}

// Where to go after logging in: the server has already checked it (an allowed origin only).
const returnTo = () => document.body.dataset.returnTo || "/ui/account";

// ---- Messages: every error of API.md as a sentence a person can act on.

function wait(seconds) {
  if (!seconds) return "a moment";
  if (seconds < 120) return `${seconds} second${seconds === 1 ? "" : "s"}`;
  return `${Math.ceil(seconds / 60)} minutes`;
}

function sentence(text) {
  const t = String(text ?? "").trim();
  if (!t) return t;
  const s = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

// The API's field messages are predicates ("is required", "must be at least 8 characters"):
// they become "Password must be at least 8 characters."
function fieldSentence(label, text) {
  return /^(is|are|must|mixes|has|was|does|cannot)\b/.test(String(text).trim())
    ? sentence(`${label} ${text}`)
    : sentence(text);
}

function labelOf(input) {
  const label = input.labels?.[0]?.firstChild?.textContent?.trim();
  return label || null;
}

const FIELD_NAMES = {
  email: "Email", username: "Username", name: "Name", password: "Password",
  current_password: "Current password", new_password: "New password",
  new_email: "New email", code: "Code", recovery_code: "Recovery code", token: "Link",
};

const INVALID_CODE = "This code or link does not work: it may be mistyped, already used, replaced by a newer one, or expired.";

function message(r) {
  const e = r.data.error;
  switch (r.status) {
    case 0: return "Keygate could not be reached. Check your connection and try again.";
    case 400:
      return e === "invalid_code" ? INVALID_CODE : "Something went wrong on our side. Please try again.";
    case 401:
      return e === "invalid_credentials"
        ? "Incorrect email, username or password."
        : "Your session has ended. Please log in again.";
    case 403:
      if (e === "account_disabled") return "This account is disabled. Please contact an administrator.";
      if (e === "csrf_failed") return "This request could not be verified. Reload the page and try again.";
      if (e === "email_not_verified") {
        return "Please verify your email address first: follow the link we sent you (a new one is on its way if the last one expired).";
      }
      return sentence(r.data.message) || "You are not allowed to do this.";
    case 404: return "This no longer exists. Reload the page.";
    case 409:
      return e === "username_taken"
        ? "This username is already taken."
        : "An account with this email address already exists.";
    case 413: return "What you entered is too long.";
    case 422: return sentence(r.data.message) || "Please correct the fields marked below.";
    case 429: return `Too many attempts. Please wait ${wait(r.retryAfter)} and try again.`;
    case 503:
      if (!r.retryAfter && r.data.message) return sentence(r.data.message);
      return `Keygate is unavailable right now. Please try again in ${wait(r.retryAfter)}.`;
    default: return "Something went wrong on our side. Please try again.";
  }
}

function clearErrors(form) {
  for (const slot of form.querySelectorAll(".field-error, .form-error")) {
    slot.textContent = "";
    slot.hidden = true;
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

// Shows a failed call's errors: each next to the field it concerns (`aliases` maps API field
// names to the form's), the rest at the top of the form; focus goes to the first of them.
function showErrors(form, r, aliases = {}) {
  clearErrors(form);
  const fields = {};
  if (r.status === 422 && r.data.fields) Object.assign(fields, r.data.fields);
  else if (r.status === 401 && r.data.error === "invalid_credentials") fields.password = message(r);
  else if (r.status === 409) fields[r.data.error === "username_taken" ? "username" : "email"] = message(r);
  else if (r.status === 400 && r.data.error === "invalid_code" && aliases.invalid_code) {
    fields[aliases.invalid_code] = message(r);
  }
  const general = [];
  if (Object.keys(fields).length === 0) general.push(message(r));
  let first = null;
  for (const [name, text] of Object.entries(fields)) {
    const input = [...form.elements].find((el) => el.name === (aliases[name] ?? name));
    const slot = input && byId(`${input.id}-error`);
    if (slot) {
      slot.textContent = fieldSentence(labelOf(input) ?? FIELD_NAMES[name] ?? name, text);
      slot.hidden = false;
      input.setAttribute("aria-invalid", "true");
      first ??= input;
    } else {
      general.push(fieldSentence(FIELD_NAMES[name] ?? name, text));
    }
  }
  const top = form.querySelector(".form-error");
  if (general.length > 0 && top) {
    top.textContent = general.join(" ");
    top.hidden = false;
  }
  (first ?? top)?.focus?.();
}

function showError(slotId, r) {
  const slot = byId(slotId);
  slot.textContent = message(r);
  slot.hidden = false;
}

function say(text) {
  byId("status").textContent = text;
}

// Runs `action` with the form's buttons disabled, so a double click sends one request.
async function busy(form, action) {
  const buttons = form.querySelectorAll("button");
  for (const b of buttons) b.disabled = true;
  try { return await action(); } finally { for (const b of buttons) b.disabled = false; }
}

// ---- Pages

async function loginPage() {
  const form = byId("login");
  // Still logged in through the cookie? Go on at once.
  if (csrf() && (await refresh()).ok) return location.assign(returnTo());
  const register = byId("register-link");
  if (register) register.search = `?return_to=${encodeURIComponent(returnTo())}`;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const login = form.elements.login.value.trim();
      const body = { password: form.elements.password.value };
      body[login.includes("@") ? "email" : "username"] = login;
      const r = await call("POST", "/auth/login?transport=cookie", { body });
      if (r.status === 403 && r.data.error === "mfa_required") return secondFactor(form, r.data.mfa_token);
      if (!r.ok) return showErrors(form, r, { email: "login", username: "login" });
      accessToken = r.data.access_token;
      location.assign(returnTo());
    });
  });
}

// The second step of a login: a code from the authenticator app, or a recovery code.
function secondFactor(login, mfaToken) {
  const form = byId("mfa");
  login.hidden = true;
  form.hidden = false;
  let recovery = false;
  const toggle = byId("mfa-use-recovery");
  const show = () => {
    byId("mfa-code-field").hidden = recovery;
    byId("mfa-recovery-field").hidden = !recovery;
    toggle.textContent = recovery ? "Use a code from the app instead" : "Use a recovery code instead";
    byId("mfa-hint").textContent = recovery
      ? "Enter one of the recovery codes you saved when you turned on two-factor authentication."
      : "Enter the 6-digit code from your authenticator app.";
    form.elements[recovery ? "recovery_code" : "code"].focus();
  };
  toggle.addEventListener("click", () => { recovery = !recovery; clearErrors(form); show(); });
  show();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const field = recovery ? "recovery_code" : "code";
      const body = { mfa_token: mfaToken, [field]: form.elements[field].value.trim() };
      const r = await call("POST", "/auth/mfa/verify?transport=cookie", { body });
      if (r.ok) {
        accessToken = r.data.access_token;
        return location.assign(returnTo());
      }
      showErrors(form, r, { invalid_code: field });
    });
  });
}

// The token of an emailed link, taken out of the address bar at once (it stays in memory).
function linkToken() {
  const token = new URLSearchParams(location.search).get("token") ?? "";
  if (location.search) history.replaceState(null, "", location.pathname);
  return token;
}

function forgotPage() {
  const form = byId("forgot");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const r = await call("POST", "/auth/password/forgot", { body: { email: form.elements.email.value.trim() } });
      if (!r.ok) return showErrors(form, r);
      clearErrors(form);
      const done = byId("forgot-done");
      done.textContent = "If an account uses this address, a link to choose a new password is on its way. Check your inbox.";
      done.hidden = false;
    });
  });
}

function resetPage() {
  const token = linkToken();
  const form = byId("reset");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const body = { token, new_password: form.elements.new_password.value };
      const r = await call("POST", "/auth/password/reset", { body });
      if (!r.ok) return showErrors(form, r);
      form.hidden = true;
      byId("reset-done").hidden = false;
    });
  });
}

// /ui/verify-email and /ui/confirm-email: one click sends the link's token.
function linkPage(path) {
  const token = linkToken();
  const form = byId("link");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const r = await call("POST", path, { body: { token } });
      if (!r.ok) return showErrors(form, r);
      form.hidden = true;
      byId("link-done").hidden = false;
    });
  });
}

async function registerPage() {
  const form = byId("register");
  byId("login-link").search = `?return_to=${encodeURIComponent(returnTo())}`;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const value = (name) => form.elements[name].value.trim();
      const body = { email: value("email"), password: form.elements.password.value };
      for (const optional of ["name", "username"]) if (value(optional)) body[optional] = value(optional);
      const created = await call("POST", "/auth/register", { body });
      if (!created.ok) return showErrors(form, created);
      const r = await call("POST", "/auth/login?transport=cookie", {
        body: { email: body.email, password: body.password },
      });
      if (!r.ok) return showErrors(form, r);
      accessToken = r.data.access_token;
      location.assign(returnTo());
    });
  });
}

function when(rfc3339) {
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? rfc3339 : d.toLocaleString();
}

async function loadProfile() {
  const r = await authed("GET", "/auth/me");
  const form = byId("profile");
  if (!r.ok) return showErrors(form, r);
  form.elements.email.value = r.data.email ?? "";
  form.elements.name.value = r.data.name ?? "";
  form.elements.username.value = r.data.username ?? "";
  const status = byId("profile-email-status");
  status.textContent = r.data.email_verified ? "Verified" : "Not verified yet";
  status.className = `hint ${r.data.email_verified ? "verified" : "unverified"}`;
  // Without mail nothing can be verified: say nothing rather than "not verified".
  status.hidden = !mailOn() && !r.data.email_verified;
  byId("verify-section").hidden = !mailOn() || r.data.email_verified;
  byId("email-section").hidden = !mailOn();
  showMfa(r.data.mfa_enabled);
}

const mailOn = () => document.body.dataset.mail === "on";

function showMfa(enabled) {
  byId("mfa-status").textContent = enabled
    ? "On: logging in asks for a code from your authenticator app."
    : "Off: your password alone logs you in.";
  byId("mfa-start").hidden = enabled;
  byId("mfa-off").hidden = !enabled;
}

function mfaSection() {
  const start = byId("mfa-start");
  const confirm = byId("mfa-confirm");
  start.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(start, async () => {
      const r = await authed("POST", "/auth/mfa/totp", { password: start.elements.password.value });
      if (!r.ok) return showErrors(start, r);
      start.reset();
      start.hidden = true;
      // The server's SVG (rectangles only) parsed as SVG, never as HTML.
      const svg = new DOMParser().parseFromString(r.data.qr_svg, "image/svg+xml").documentElement;
      byId("mfa-qr").replaceChildren(document.importNode(svg, true));
      byId("mfa-secret").textContent = r.data.secret;
      confirm.hidden = false;
      confirm.elements.code.focus();
    });
  });
  confirm.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(confirm, async () => {
      const r = await authed("POST", "/auth/mfa/totp/confirm", { code: confirm.elements.code.value.trim() });
      if (!r.ok) return showErrors(confirm, r, { invalid_code: "code" });
      confirm.reset();
      confirm.hidden = true;
      byId("mfa-codes-list").replaceChildren(...r.data.recovery_codes.map((code) => {
        const li = document.createElement("li");
        li.textContent = code;
        return li;
      }));
      byId("mfa-codes").hidden = false;
      showMfa(true);
      say("Two-factor authentication is on. Your other sessions were logged out.");
      await loadSessions();
    });
  });
  const off = byId("mfa-off");
  off.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(off, async () => {
      const body = { password: off.elements.password.value, code: off.elements.code.value.trim() };
      const r = await authed("DELETE", "/auth/mfa/totp", body);
      if (!r.ok) return showErrors(off, r, { invalid_code: "code" });
      off.reset();
      byId("mfa-codes").hidden = true;
      showMfa(false);
      say("Two-factor authentication is off.");
    });
  });
}

function emailSections() {
  byId("resend").addEventListener("click", async () => {
    const r = await authed("POST", "/auth/email/verify/resend");
    if (!r.ok) return showError("resend-error", r);
    byId("resend-error").hidden = true;
    say("A new verification link is on its way. Check your inbox.");
  });
  const form = byId("email");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const body = { new_email: form.elements.new_email.value.trim(), password: form.elements.password.value };
      const r = await authed("POST", "/auth/email/change", body);
      if (!r.ok) return showErrors(form, r);
      clearErrors(form);
      form.reset();
      say("A confirmation link is on its way to the new address. Your address changes when you follow it.");
    });
  });
}

async function loadSessions() {
  const list = byId("sessions");
  const error = byId("sessions-error");
  const r = await authed("GET", "/auth/sessions");
  if (!r.ok) return showError("sessions-error", r);
  error.hidden = true;
  list.replaceChildren(...r.data.sessions.map(sessionItem));
}

function sessionItem(s) {
  const li = document.createElement("li");
  li.dataset.sessionId = s.id;
  if (s.current) li.classList.add("is-current");
  const info = document.createElement("div");
  info.className = "session-info";
  const device = document.createElement("strong");
  device.textContent = s.user_agent || "Unknown device";
  info.append(device);
  if (s.current) {
    const mark = document.createElement("span");
    mark.className = "current";
    mark.textContent = "This device";
    info.append(" ", mark);
  }
  const details = document.createElement("small");
  details.textContent = [
    `Last active ${when(s.last_active_at)}`,
    s.ip ? `IP ${s.ip}` : null,
    `Logged in ${when(s.created_at)}`,
  ].filter(Boolean).join(" · ");
  info.append(details);
  const end = document.createElement("button");
  end.type = "button";
  end.className = "danger";
  end.textContent = s.current ? "Log out" : "End session";
  end.setAttribute("aria-label", s.current
    ? "Log out on this device"
    : `End the session of ${s.user_agent || "an unknown device"}, last active ${when(s.last_active_at)}`);
  end.addEventListener("click", () => (s.current ? logout("local") : endSession(s.id, end)));
  li.append(info, end);
  return li;
}

async function endSession(id, button) {
  button.disabled = true;
  const r = await authed("DELETE", `/auth/sessions/${encodeURIComponent(id)}`);
  if (!r.ok && r.status !== 404) {
    button.disabled = false;
    return showError("sessions-error", r);
  }
  say("The session was ended.");
  await loadSessions();
}

async function logout(scope) {
  const r = await call("POST", "/auth/logout", { body: { scope }, bearer: true, csrfHeader: true });
  accessToken = null;
  if (!r.ok) return showError("logout-error", r);
  location.assign("/ui/login");
}

async function accountPage() {
  if (!csrf()) return toLogin();
  const r = await refresh();
  if (r.status === 401 || r.status === 403 || r.status === 422) return toLogin();
  if (!r.ok) return say(message(r));
  await Promise.all([loadProfile(), loadSessions()]);

  const profile = byId("profile");
  profile.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(profile, async () => {
      const value = (name) => profile.elements[name].value.trim() || null;
      const saved = await authed("PATCH", "/auth/me", { name: value("name"), username: value("username") });
      if (!saved.ok) return showErrors(profile, saved);
      clearErrors(profile);
      say("Your profile was saved.");
    });
  });

  const password = byId("password");
  password.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(password, async () => {
      const body = {
        current_password: password.elements.current_password.value,
        new_password: password.elements.new_password.value,
      };
      const changed = await authed("POST", "/auth/password", body);
      if (!changed.ok) return showErrors(password, changed);
      clearErrors(password);
      password.reset();
      say("Your password was changed, and your other sessions were logged out.");
      await loadSessions();
    });
  });

  mfaSection();
  emailSections();
  byId("logout").addEventListener("click", () => logout("local"));
  byId("logout-everywhere").addEventListener("click", () => logout("global"));
}

const pages = {
  login: loginPage,
  register: registerPage,
  account: accountPage,
  forgot: forgotPage,
  reset: resetPage,
  verify: () => linkPage("/auth/email/verify"),
  confirm: () => linkPage("/auth/email/change/confirm"),
};
pages[document.body.dataset.page]?.();
