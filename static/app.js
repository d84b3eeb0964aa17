// The order page: finds orders by what was typed (a uid, a track number, a
// phone, an email, ...) and draws them, lists the newest orders, and shows
// the rejected messages. No framework, no build step, nothing loaded from
// elsewhere. Every request to the API goes through authorizedFetch().
//
// Safety: every value that comes from an order is put into the page with
// textContent or as an attribute value, never parsed as HTML.
"use strict";

(function () {
  const PAGE_SIZE = 20;

  const $ = (id) => document.getElementById(id);
  const form = $("lookup");
  const input = $("order_uid");
  const view = $("view");
  const statusBox = $("status");
  const statusText = $("status-text");
  const retry = $("retry");
  const orderBox = $("order");
  const recentList = $("recent-list");
  const recentStatus = $("recent-status");
  const more = $("more");
  const kind = $("search-kind");
  const results = $("results");
  const resultsList = $("results-list");
  const resultsMore = $("results-more");
  const rejectedView = $("rejected-view");
  const rejectedList = $("rejected-list");
  const rejectedMore = $("rejected-more");
  const rejectedReason = $("rejected-reason");
  const rejectedMessage = $("rejected-message");

  /** The search keys GET /orders takes, with how the page names them. */
  const KEYS = {
    track_number: "track number",
    customer_id: "customer",
    transaction: "transaction",
    phone: "phone",
    email: "email",
  };

  // ---- the API ---------------------------------------------------------------

  /**
   * GETs `path` from the API (through authorizedFetch, as every request). Resolves to { response, text, body }
   * with `body` the parsed JSON or null; rejects when the server cannot be
   * reached or `signal` aborts.
   */
  async function api(path, signal) {
    const response = await authorizedFetch(path, { signal, headers: { Accept: "application/json" } });
    const text = await response.text();
    let body = null;
    try {
      body = parseJson(text);
    } catch (_) {
      body = null;
    }
    return { response, text, body };
  }

  /**
   * fetch() with the token held (see "signing in") as a bearer token: the
   * one place credentials are added. A 401 asks for a token.
   */
  async function authorizedFetch(path, options) {
    const headers = Object.assign({}, options.headers);
    const token = storedToken();
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    // Without a token, or with one the service does not know: ask for one.
    if (response.status === 401) askToSignIn(response, token);
    return response;
  }

  /** The API's error message in a body, if it has one. */
  function reasonOf(body) {
    return body && typeof body.error === "string" ? body.error : null;
  }

  // ---- small helpers -------------------------------------------------------

  /** An element with a class and text; children are appended as given. */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setText(id, value) {
    $(id).textContent = value === undefined || value === null ? "" : String(value);
  }

  function orDash(value) {
    return value === undefined || value === null || value === "" ? "—" : String(value);
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
  const shortDateFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });

  /** A <time> in the viewer's local time, with the value as sent in its title. */
  function timeElement(date, raw, format) {
    const node = document.createElement("time");
    if (Number.isNaN(date.getTime())) {
      node.textContent = String(raw);
      return node;
    }
    node.dateTime = date.toISOString();
    node.title = String(raw);
    node.textContent = (format || dateFormat).format(date);
    return node;
  }

  /** "1817 USD": the number as given (no division into major units). */
  function money(value, currency) {
    return currency ? orDash(value) + " " + currency : orDash(value);
  }

  /** Sums integers exactly, whatever their size (they may exceed 2^53). */
  function sum(values) {
    let total = 0n;
    for (const v of values) {
      try {
        total += BigInt(String(v));
      } catch (_) {
        return null;
      }
    }
    return total;
  }

  /**
   * Parses JSON, keeping integers too large for a double as their exact
   * source text (JSON.parse source access, where the browser has it).
   */
  function parseJson(text) {
    return JSON.parse(text, function (key, value, context) {
      if (typeof value === "number" && !Number.isSafeInteger(value) && context && context.source) {
        return context.source;
      }
      return value;
    });
  }

  /**
   * Pretty-prints JSON text token by token, so every value stays exactly as
   * the API sent it (no number is rounded through a double).
   */
  function prettyJson(text) {
    let out = "";
    let depth = 0;
    let inString = false;
    let escaped = false;
    const pad = () => "\n" + "  ".repeat(depth);
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (inString) {
        out += c;
        if (escaped) escaped = false;
        else if (c === "\\") escaped = true;
        else if (c === "\"") inString = false;
        continue;
      }
      if (c === " " || c === "\n" || c === "\r" || c === "\t") continue;
      if (c === "\"") {
        inString = true;
        out += c;
      } else if (c === "{" || c === "[") {
        let j = i + 1;
        while (/\s/.test(text[j] || "")) j++;
        if (text[j] === "}" || text[j] === "]") {
          out += c + text[j];
          i = j;
        } else {
          depth++;
          out += c + pad();
        }
      } else if (c === "}" || c === "]") {
        depth--;
        out += pad() + c;
      } else if (c === ",") {
        out += "," + pad();
      } else if (c === ":") {
        out += ": ";
      } else {
        out += c;
      }
    }
    return out;
  }

  // ---- the status line -----------------------------------------------------

  /**
   * Shows one state: idle, loading, found, not-found, invalid, signed-out,
   * unavailable, unreachable or error. `onRetry`, when given, adds a "Try again" button.
   */
  function setState(state, message, onRetry) {
    statusBox.dataset.state = state;
    statusText.textContent = message;
    retry.hidden = !onRetry;
    retry.onclick = onRetry || null;
    view.setAttribute("aria-busy", state === "loading" ? "true" : "false");
  }

  // ---- drawing an order ----------------------------------------------------

  function pairs(dl, rows) {
    dl.replaceChildren();
    for (const [label, value, className] of rows) {
      const row = el("div");
      row.append(el("dt", null, label));
      const dd = el("dd", className);
      if (value instanceof Node) dd.append(value);
      else dd.textContent = orDash(value);
      row.append(dd);
      dl.append(row);
    }
  }

  function drawOrder(order, rawText) {
    const payment = order.payment || {};
    const delivery = order.delivery || {};
    const items = Array.isArray(order.items) ? order.items : [];
    const currency = payment.currency || "";

    setText("order-uid", order.order_uid);
    setText("track-number", orDash(order.track_number));
    $("date-created").replaceChildren(timeElement(new Date(order.date_created), order.date_created));
    setText("customer", orDash(order.customer_id));
    setText("delivery-service", orDash(order.delivery_service));
    setText("head-amount", money(payment.amount, currency));

    pairs($("delivery"), [
      ["Name", delivery.name],
      ["Phone", delivery.phone, "mono"],
      ["Email", delivery.email],
      ["Address", delivery.address],
      ["City", delivery.city],
      ["Region", delivery.region],
      ["ZIP", delivery.zip, "mono"],
    ]);

    setText("payment-amount", money(payment.amount, currency));
    const paid = typeof payment.payment_dt === "number"
      ? timeElement(new Date(payment.payment_dt * 1000), payment.payment_dt)
      : payment.payment_dt;
    pairs($("payment"), [
      ["Goods total", money(payment.goods_total, currency), "num-cell"],
      ["Delivery cost", money(payment.delivery_cost, currency), "num-cell"],
      ["Fee", money(payment.custom_fee, currency), "num-cell"],
      ["Bank", payment.bank],
      ["Provider", payment.provider],
      ["Paid at", paid],
      ["Transaction", payment.transaction, "mono"],
    ]);

    const tbody = $("items").tBodies[0];
    tbody.replaceChildren();
    for (const item of items) {
      const row = el("tr");
      const name = el("td", "item-name");
      name.append(el("span", null, orDash(item.name)));
      const ids = [];
      if (item.nm_id !== undefined) ids.push("nm " + item.nm_id);
      if (item.chrt_id !== undefined) ids.push("chrt " + item.chrt_id);
      if (ids.length) name.append(el("span", "sub mono", ids.join(" · ")));
      // data-label names the column where a narrow screen stacks the cells.
      const cell = (label, className, text) => {
        const td = el("td", className, text);
        td.dataset.label = label;
        return td;
      };
      row.append(
        name,
        cell("Brand", null, orDash(item.brand)),
        cell("Size", null, orDash(item.size)),
        cell("Price", "num", orDash(item.price)),
        cell("Sale", "num", item.sale === undefined ? "—" : item.sale + "%"),
        cell("Total", "num", orDash(item.total_price)),
        cell("Status", "num", orDash(item.status)),
      );
      tbody.append(row);
    }
    const total = sum(items.map((item) => item.total_price));
    setText("items-total", total === null ? "—" : money(total, currency));
    setText("items-count", "(" + items.length + ")");

    $("raw-json").textContent = prettyJson(rawText);
    setText("copy-status", "");

    showView(orderBox);
    document.title = order.order_uid + " · Order lookup";
    markCurrent(order.order_uid);
  }

  // ---- signing in -----------------------------------------------------------
  //
  // With API_TOKENS_FILE set, the API answers 401 until the page sends a
  // token. The token lives in this tab's sessionStorage only: never a cookie
  // (no other site can make the browser send it), never the address (no
  // history, logs or Referer carry it), gone when the tab closes.

  const TOKEN_KEY = "orders-api-token";
  const signInBox = $("sign-in");
  const signInForm = $("sign-in-form");
  const tokenInput = $("token");
  const signInText = $("sign-in-text");
  const signOut = $("sign-out");

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function forgetToken() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage disabled: nothing was kept.
    }
  }

  /** Shows the sign-in form: the token sent was rejected, or none was sent. */
  function askToSignIn(response, sent) {
    const challenge = response.headers.get("WWW-Authenticate") || "";
    const rejected = Boolean(sent) && /error="invalid_token"/.test(challenge);
    if (rejected) forgetToken();
    if (!storedToken()) signOut.hidden = true;
    if (!signInBox.hidden && signInBox.dataset.state === "rejected" && !rejected) return;
    signInBox.dataset.state = rejected ? "rejected" : "needed";
    signInText.textContent = rejected
      ? "Token rejected: the service does not know it. Check it and sign in again."
      : "This service asks for a token before it shows orders. Ask its operator for one.";
    signInBox.hidden = false;
  }

  /** Draws what the address and the recent list show, with the token now held. */
  function reloadAll() {
    showAddress();
    loadRecent(false);
    if (!paused) followLive();
  }

  signInForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = tokenInput.value.trim();
    if (token === "") {
      signInText.textContent = "Paste a token first.";
      tokenInput.focus();
      return;
    }
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      signInText.textContent = "This browser keeps no session storage, so the page cannot sign in.";
      return;
    }
    tokenInput.value = "";
    signInBox.hidden = true;
    signOut.hidden = false;
    reloadAll();
  });

  signOut.addEventListener("click", () => {
    forgetToken();
    if (liveController) liveController.abort();
    signOut.hidden = true;
    // Nothing read with the token stays on the screen.
    showView(null);
    $("raw-json").textContent = "";
    recentList.replaceChildren();
    more.hidden = true;
    next = null;
    reloadAll();
  });

  // ---- looking an order up -------------------------------------------------

  let inFlight = null;

  /**
   * GETs `path` for the main view, aborting the request in flight. Resolves
   * to the answer, or to null when there is nothing to show: another
   * request overtook this one, or the server cannot be reached (then the
   * status says so, with `onRetry`).
   */
  async function request(path, onRetry) {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    try {
      const answer = await api(path, controller.signal);
      if (controller.signal.aborted) return null;
      inFlight = null;
      return answer;
    } catch (_) {
      if (!controller.signal.aborted) {
        setState("unreachable",
          "The server cannot be reached. Check that the service runs and try again.", onRetry);
      }
      return null;
    }
  }

  /**
   * Says what went wrong with an answer that is no success. A 400's reason
   * names the parameter (`phone: no digits`); the page says it after
   * `invalidWhat` instead.
   */
  function failed(response, body, parameter, invalidWhat, onRetry) {
    const reason = reasonOf(body);
    if (response.status === 401) {
      setState("signed-out", "Sign in to see orders.");
    } else if (response.status === 400) {
      const rule = (reason || "bad request").replace(parameter + ": ", "");
      setState("invalid", invalidWhat + ": " + rule + ".");
    } else if (response.status === 503) {
      setState("unavailable", "The order store is unavailable right now (" + (reason || "503") + ").", onRetry);
    } else {
      setState("error",
        "Unexpected answer from the server: HTTP " + response.status + (reason ? " (" + reason + ")" : "") + ".",
        onRetry);
    }
  }

  /** Shows one of the main views (or none), hiding the others. */
  function showView(which) {
    for (const box of [orderBox, results, rejectedView, rejectedMessage]) box.hidden = box !== which;
  }

  /** Looks `uid` up and draws the answer; `focusOrder` moves focus to it. */
  async function lookup(uid, focusOrder) {
    showView(null);
    markCurrent(uid);
    setState("loading", "Looking up " + uid + "…");
    const retry = () => lookup(uid, focusOrder);
    const answer = await request("/order?order_uid=" + encodeURIComponent(uid), retry);
    if (!answer) return;
    const { response, text, body } = answer;
    if (response.ok && body && typeof body === "object") {
      drawOrder(body, text);
      setState("found", "Showing order " + uid + ".");
      if (focusOrder) $("order-title").focus();
    } else if (response.status === 401) {
      setState("signed-out", "Sign in to see order " + uid + ".");
    } else if (response.status === 404) {
      setState("not-found", "No order with uid " + uid + ".");
    } else {
      failed(response, body, "order_uid", "That is not a valid order UID", retry);
    }
  }

  function uidFromAddress() {
    return new URLSearchParams(location.search).get("order_uid");
  }

  /** Goes to `url` (a new history entry unless it is the address already). */
  function go(url) {
    if (location.pathname + location.search === url) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
  }

  /** Puts `uid` in the address. */
  function remember(uid) {
    go("/?order_uid=" + encodeURIComponent(uid));
  }

  function open(uid, focusOrder) {
    input.value = uid;
    remember(uid);
    lookup(uid, focusOrder);
  }

  /**
   * What was typed, guessed: an email has an @, a track number starts with
   * WB, a phone is a + or digits (with spaces, dots, dashes, brackets);
   * anything else is a uid. The selector overrides the guess.
   */
  function guess(text) {
    if (text.includes("@")) return "email";
    if (/^WB/.test(text)) return "track_number";
    if (/^\+?[0-9 ().-]+$/.test(text) && /[0-9]{3}/.test(text.replace(/[^0-9]/g, ""))) return "phone";
    return "order_uid";
  }

  /** The search key and value in the address, if it holds one. */
  function searchFromAddress() {
    const params = new URLSearchParams(location.search);
    for (const key of Object.keys(KEYS)) {
      if (params.has(key)) return { key, value: params.get(key) };
    }
    return null;
  }

  /** Runs the search `key`=`value` and shows its answer (`append`: the next page). */
  async function search(key, value, append) {
    const what = KEYS[key] + " " + value;
    if (!append) {
      showView(null);
      setState("loading", "Searching for the " + what + "…");
    }
    let url = "/orders?" + key + "=" + encodeURIComponent(value) + "&limit=" + PAGE_SIZE;
    if (append && searchNext) url += "&before=" + encodeURIComponent(searchNext);
    resultsMore.disabled = true;
    const retry = () => search(key, value, append);
    const answer = await request(url, retry);
    resultsMore.disabled = false;
    if (!answer) return;
    const { response, body } = answer;
    if (!response.ok || !body || !Array.isArray(body.orders)) {
      failed(response, body, key, "That is not a valid " + KEYS[key], retry);
      return;
    }
    searchNext = body.next || null;
    if (!append && body.orders.length === 1 && !searchNext) {
      // One order: open it, the search staying in the address.
      lookup(String(body.orders[0].order_uid), false);
      return;
    }
    if (!append && body.orders.length === 0) {
      setState("not-found", "No orders with the " + what + ".");
      return;
    }
    if (!append) resultsList.replaceChildren();
    for (const summary of body.orders) resultsList.append(recentItem(summary));
    resultsMore.hidden = searchNext === null;
    const count = resultsList.children.length;
    setText("results-title", "Orders with the " + what);
    showView(results);
    setState("listed", count + (count === 1 ? " order" : " orders") + " with the " + what + " shown" +
      (searchNext ? "; more are available." : "."));
    markCurrent(null);
  }

  let searchNext = null;

  function showAddress() {
    const params = new URLSearchParams(location.search);
    const uid = uidFromAddress();
    const found = searchFromAddress();
    if (params.get("view") === "rejected") {
      showRejected(params.get("reason") || "", params.get("id"));
    } else if (uid !== null) {
      input.value = uid;
      kind.value = "auto";
      lookup(uid, false);
    } else if (found) {
      input.value = found.value;
      kind.value = guess(found.value) === found.key ? "auto" : found.key;
      search(found.key, found.value, false);
    } else {
      if (inFlight) inFlight.abort();
      input.value = "";
      showView(null);
      document.title = "Order lookup";
      markCurrent(null);
      kind.value = "auto";
      setState("idle", "Enter what you have (an order UID, a track number, a phone or an email), or pick one of the recent orders.");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (text === "") {
      setState("invalid", "Type what to search for first.");
      input.focus();
      return;
    }
    const key = kind.value === "auto" ? guess(text) : kind.value;
    if (key === "order_uid") {
      open(text, false);
    } else {
      go("/?" + key + "=" + encodeURIComponent(text));
      search(key, text, false);
    }
  });

  resultsMore.addEventListener("click", () => {
    const found = searchFromAddress();
    if (found) search(found.key, found.value, true);
  });

  window.addEventListener("popstate", showAddress);

  // ---- raw JSON and copying ------------------------------------------------

  /** Copies the text of `preId`, saying how in `statusId`. */
  async function copyText(preId, statusId) {
    const text = $(preId).textContent;
    const done = (message) => setText(statusId, message);
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      done("Copied.");
    } catch (_) {
      // Without the clipboard API (a page on plain http off localhost), select
      // the text so Ctrl+C copies it.
      const range = document.createRange();
      range.selectNodeContents($(preId));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      done("Selected: press Ctrl+C to copy.");
    }
  }

  $("copy").addEventListener("click", () => copyText("raw-json", "copy-status"));
  $("copy-message").addEventListener("click", () => copyText("rejected-payload", "copy-message-status"));

  // ---- the recent orders ---------------------------------------------------

  let next = null;

  function markCurrent(uid) {
    for (const link of recentList.querySelectorAll("a")) {
      if (link.dataset.uid === uid) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function recentItem(summary) {
    const uid = String(summary.order_uid);
    const link = el("a", "recent-link");
    link.href = "/?order_uid=" + encodeURIComponent(uid);
    link.dataset.uid = uid;
    link.append(el("span", "recent-uid mono", uid));
    const meta = el("span", "recent-meta");
    meta.append(timeElement(new Date(summary.date_created), summary.date_created, shortDateFormat));
    meta.append(el("span", "recent-amount", money(summary.amount, summary.currency)));
    link.append(meta);
    link.addEventListener("click", (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      open(uid, true);
    });
    const item = el("li");
    item.append(link);
    return item;
  }

  /** Loads a page of recent orders: the first (replacing the list) or the next. */
  async function loadRecent(append) {
    let url = "/orders?limit=" + PAGE_SIZE;
    if (append && next) url += "&before=" + encodeURIComponent(next);
    more.disabled = true;
    recentStatus.textContent = "Loading recent orders…";
    let body;
    try {
      let response;
      ({ response, body } = await api(url));
      if (response.status === 401) {
        recentList.replaceChildren();
        more.hidden = true;
        recentStatus.textContent = "Sign in to see the recent orders.";
        return;
      }
      if (!response.ok || !body || !Array.isArray(body.orders)) {
        throw new Error(reasonOf(body) || "HTTP " + response.status);
      }
    } catch (err) {
      recentStatus.textContent = err instanceof TypeError
        ? "Recent orders could not be loaded: the server cannot be reached."
        : "Recent orders could not be loaded: " + err.message + ".";
      more.disabled = false;
      return;
    }
    if (!append) recentList.replaceChildren();
    const firstNew = recentList.children.length;
    for (const summary of body.orders) recentList.append(recentItem(summary));
    next = body.next || null;
    more.hidden = next === null;
    more.disabled = false;
    const count = recentList.children.length;
    recentStatus.textContent = count === 0
      ? "No orders yet."
      : count + (count === 1 ? " order shown." : " orders shown.") + (next ? "" : " That is all of them.");
    markCurrent(uidFromAddress());
    if (append && recentList.children[firstNew]) {
      recentList.children[firstNew].querySelector("a").focus();
    }
  }

  more.addEventListener("click", () => loadRecent(true));
  $("refresh").addEventListener("click", () => loadRecent(false));

  // ---- rejected messages ---------------------------------------------------

  let rejectedNext = null;

  /** The rejected view: the list of `reason` (all when empty), or message `id`. */
  function showRejected(reason, id) {
    rejectedReason.value = reason;
    document.title = "Rejected messages · Order lookup";
    markCurrent(null);
    if (id !== null) loadRejectedMessage(id);
    else loadRejected(reason, false);
  }

  function rejectedUrl(reason, id) {
    let url = "/?view=rejected";
    if (reason) url += "&reason=" + encodeURIComponent(reason);
    if (id !== null && id !== undefined) url += "&id=" + encodeURIComponent(id);
    return url;
  }

  function rejectedItem(row) {
    const link = el("a", "recent-link");
    link.href = rejectedUrl(rejectedReason.value, row.id);
    link.dataset.id = String(row.id);
    const head = el("span", "recent-uid mono", "#" + row.id + " " + row.reason);
    if (row.replayed_at) head.append(" ", el("span", "badge", "replayed"));
    link.append(head);
    link.append(el("span", "rejected-detail", row.detail));
    const meta = el("span", "recent-meta");
    meta.append(timeElement(new Date(row.received_at), row.received_at, shortDateFormat));
    meta.append(el("span", "recent-amount", (row.order_uid ? row.order_uid + " · " : "") + row.size + " bytes"));
    link.append(meta);
    link.addEventListener("click", (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      go(link.getAttribute("href"));
      loadRejectedMessage(String(row.id));
    });
    const item = el("li");
    item.append(link);
    return item;
  }

  const RETENTION_UNITS = { d: ["day", "days"], h: ["hour", "hours"], m: ["minute", "minutes"], s: ["second", "seconds"] };

  /**
   * How long rejected messages are kept, in words, from the list's
   * `retention` (`30d`, `36h`, ...; null: forever).
   */
  function retentionText(retention) {
    if (retention === null) return "Rejected messages are kept until deleted by hand.";
    const parts = /^(\d+)(d|h|m|s)$/.exec(String(retention));
    if (!parts) return "Rejected messages are kept for " + retention + ".";
    const count = Number(parts[1]);
    const unit = RETENTION_UNITS[parts[2]][count === 1 ? 0 : 1];
    return "Rejected messages are kept for " + count + " " + unit + ", then deleted.";
  }

  /** Loads a page of rejected messages: the first (replacing the list) or the next. */
  async function loadRejected(reason, append) {
    let url = "/rejected?limit=" + PAGE_SIZE;
    if (reason) url += "&reason=" + encodeURIComponent(reason);
    if (append && rejectedNext !== null) url += "&before=" + encodeURIComponent(rejectedNext);
    if (!append) {
      showView(null);
      setState("loading", "Loading the rejected messages…");
    }
    rejectedMore.disabled = true;
    const retry = () => loadRejected(reason, append);
    const answer = await request(url, retry);
    rejectedMore.disabled = false;
    if (!answer) return;
    const { response, body } = answer;
    if (!response.ok || !body || !Array.isArray(body.rejected)) {
      failed(response, body, "reason", "Not a valid reason", retry);
      return;
    }
    if (!append) rejectedList.replaceChildren();
    if (body.retention !== undefined) {
      setText("rejected-retention", retentionText(body.retention));
      $("rejected-retention").hidden = false;
    }
    for (const row of body.rejected) rejectedList.append(rejectedItem(row));
    rejectedNext = body.next === null || body.next === undefined ? null : body.next;
    rejectedMore.hidden = rejectedNext === null;
    const count = rejectedList.children.length;
    showView(rejectedView);
    setState("listed", count === 0
      ? "No rejected messages" + (reason ? " for " + reason : "") + "."
      : count + (count === 1 ? " rejected message" : " rejected messages") + " shown" + (rejectedNext === null ? "." : "; more are available."));
  }

  /** Shows rejected message `id` whole, its bytes ready to copy. */
  async function loadRejectedMessage(id) {
    showView(null);
    setState("loading", "Loading rejected message " + id + "…");
    const retry = () => loadRejectedMessage(id);
    const answer = await request("/rejected/" + encodeURIComponent(id), retry);
    if (!answer) return;
    const { response, body } = answer;
    if (response.status === 404) {
      setState("not-found", "No rejected message " + id + ".");
      return;
    }
    if (!response.ok || !body || typeof body !== "object") {
      failed(response, body, "id", "Not a rejected message id", retry);
      return;
    }
    setText("rejected-message-title", "#" + body.id + " " + body.reason);
    const replayed = body.replayed_at
      ? timeElement(new Date(body.replayed_at), body.replayed_at)
      : "not replayed";
    pairs($("rejected-facts"), [
      ["Reason", body.reason, "mono"],
      ["Detail", body.detail],
      ["Received", timeElement(new Date(body.received_at), body.received_at)],
      ["Replayed", replayed],
      ["Order UID (hint)", body.order_uid, "mono"],
      ["Subject", body.subject, "mono"],
      ["Stream", body.stream_sequence === null ? body.stream : body.stream + " #" + body.stream_sequence, "mono"],
      ["Headers", body.headers, "mono"],
      ["Size", body.size + " bytes" + (body.payload_encoding === "base64" ? " (not UTF-8: shown in base64)" : "")],
    ]);
    $("rejected-payload").textContent = body.payload;
    setText("copy-message-status", "");
    showView(rejectedMessage);
    setState("found", "Showing rejected message " + body.id + ".");
    $("rejected-message-title").focus();
  }

  rejectedMore.addEventListener("click", () => loadRejected(rejectedReason.value, true));
  rejectedReason.addEventListener("change", () => {
    go(rejectedUrl(rejectedReason.value, null));
    loadRejected(rejectedReason.value, false);
  });
  $("rejected-link").addEventListener("click", (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    go(rejectedUrl("", null));
    showRejected("", null);
  });

  // ---- live updates --------------------------------------------------------
  //
  // GET /orders/events, read with fetch() rather than EventSource (which
  // cannot send headers): each stored order comes as an event and goes to
  // the top of the list. After an error the stream is opened again, with
  // a growing wait, from the last event id received (Last-Event-ID), so
  // nothing is missed; pausing closes the stream, resuming catches up.

  const LIVE_MOST = 200;
  const liveButton = $("live");
  const liveState = $("live-state");
  let paused = false;
  let lastEventId = null;
  let liveController = null;
  let pending = [];
  let drawScheduled = false;
  // Which run of followLive is current: one that wakes after a pause and
  // a resume gives way to the newer one.
  let liveRun = 0;

  function setLive(state, text) {
    liveState.dataset.state = state;
    liveState.textContent = text;
  }

  /**
   * Reads a text/event-stream body and calls onEvent({type, id, data}) for
   * each event; comments and unknown fields are skipped. Returns at its end.
   */
  async function readEvents(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let event = { type: "", id: null, data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (event.data.length > 0 || event.type) {
            onEvent({ type: event.type || "message", id: event.id, data: event.data.join("\n") });
          }
          event = { type: "", id: null, data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") event.data.push(text);
        else if (field === "event") event.type = text;
        else if (field === "id") event.id = text;
      }
    }
  }

  /** Draws the orders that arrived since the last frame, newest on top. */
  function drawPending() {
    drawScheduled = false;
    if (paused) return;
    const fresh = document.createDocumentFragment();
    const seen = new Set();
    for (let i = pending.length - 1; i >= 0; i--) {
      const uid = String(pending[i].order_uid);
      if (seen.has(uid) || recentList.querySelector('a[data-uid="' + CSS.escape(uid) + '"]')) continue;
      seen.add(uid);
      fresh.append(recentItem(pending[i]));
    }
    pending = [];
    recentList.prepend(fresh);
    if (recentList.children.length > LIVE_MOST) {
      // The oldest go; paging on from them would skip some, so start over.
      while (recentList.children.length > LIVE_MOST) recentList.lastElementChild.remove();
      next = null;
      more.hidden = true;
    }
    markCurrent(uidFromAddress());
  }

  function onLiveEvent(event) {
    if (event.id) lastEventId = event.id;
    if (event.type === "reset") {
      // Orders were left out: the list from the start.
      pending = [];
      loadRecent(false);
      return;
    }
    if (event.type !== "order") return;
    let summary;
    try {
      summary = parseJson(event.data);
    } catch (_) {
      return;
    }
    if (!summary || typeof summary.order_uid !== "string") return;
    pending.push(summary);
    if (!drawScheduled) {
      drawScheduled = true;
      requestAnimationFrame(drawPending);
    }
  }

  async function followLive() {
    const run = ++liveRun;
    let wait = 1000;
    while (!paused && run === liveRun) {
      const controller = new AbortController();
      liveController = controller;
      const headers = { Accept: "text/event-stream" };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      let retryAfter = 0;
      try {
        const response = await authorizedFetch("/orders/events", { signal: controller.signal, headers });
        if (response.status === 401) {
          // Signing in starts the stream again.
          setLive("signed-out", "Sign in for live updates.");
          return;
        }
        if (!response.ok || !response.body) {
          retryAfter = Number(response.headers.get("Retry-After")) * 1000 || 0;
          throw new Error("HTTP " + response.status);
        }
        setLive("live", "Live: new orders appear at the top.");
        wait = 1000;
        await readEvents(response.body, onLiveEvent);
      } catch (_) {
        // Aborted (paused), refused or cut off: decided below.
      }
      if (paused || controller.signal.aborted || run !== liveRun) return;
      const delay = Math.max(retryAfter, wait) + Math.random() * 500;
      setLive("reconnecting", "Live updates interrupted; reconnecting…");
      await new Promise((resolve) => setTimeout(resolve, delay));
      wait = Math.min(wait * 2, 30000);
    }
  }

  liveButton.addEventListener("click", () => {
    paused = !paused;
    liveButton.setAttribute("aria-pressed", String(paused));
    liveButton.textContent = paused ? "Resume" : "Pause";
    if (paused) {
      if (liveController) liveController.abort();
      pending = [];
      setLive("paused", "Live updates paused.");
    } else {
      setLive("connecting", "Connecting to live updates…");
      // With no event id to resume from, what came meanwhile is in the list.
      if (lastEventId === null) loadRecent(false);
      followLive();
    }
  });

  // ---- start ---------------------------------------------------------------

  signOut.hidden = !storedToken();
  reloadAll();
  input.focus();
})();
