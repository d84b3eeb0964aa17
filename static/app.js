// The order page: looks an order up by its uid and draws it, and lists the
// newest orders. No framework, no build step, nothing loaded from elsewhere.
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

    orderBox.hidden = false;
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

  /** GETs `path` from the API with the held token, if any; a 401 asks for one. */
  async function api(path, options) {
    const headers = Object.assign({ Accept: "application/json" }, (options && options.headers) || {});
    const token = storedToken();
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 401) askToSignIn(response, token);
    return response;
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
    signOut.hidden = true;
    // Nothing read with the token stays on the screen.
    orderBox.hidden = true;
    $("raw-json").textContent = "";
    recentList.replaceChildren();
    more.hidden = true;
    next = null;
    reloadAll();
  });

  // ---- looking an order up -------------------------------------------------

  let inFlight = null;

  /** Looks `uid` up and draws the answer; `focusOrder` moves focus to it. */
  async function lookup(uid, focusOrder) {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    orderBox.hidden = true;
    markCurrent(uid);
    setState("loading", "Looking up " + uid + "…");

    let response;
    let text;
    try {
      response = await api("/order?order_uid=" + encodeURIComponent(uid), {
        signal: controller.signal,
      });
      text = await response.text();
    } catch (err) {
      if (controller.signal.aborted) return;
      setState("unreachable",
        "The server cannot be reached. Check that the service runs and try again.",
        () => lookup(uid, focusOrder));
      return;
    }
    if (controller.signal.aborted) return;
    inFlight = null;

    let body = null;
    try {
      body = parseJson(text);
    } catch (_) {
      body = null;
    }
    const reason = body && typeof body.error === "string" ? body.error : null;

    if (response.ok && body && typeof body === "object") {
      drawOrder(body, text);
      setState("found", "Showing order " + uid + ".");
      if (focusOrder) $("order-title").focus();
    } else if (response.status === 401) {
      setState("signed-out", "Sign in to see order " + uid + ".");
    } else if (response.status === 404) {
      setState("not-found", "No order with uid " + uid + ".");
    } else if (response.status === 400) {
      // The API names the parameter ("order_uid: empty"); the page says it in words.
      const rule = (reason || "bad request").replace(/^order_uid: /, "");
      setState("invalid", "That is not a valid order UID: " + rule + ".");
    } else if (response.status === 503) {
      setState("unavailable",
        "The order store is unavailable right now (" + (reason || "503") + ").",
        () => lookup(uid, focusOrder));
    } else {
      setState("error",
        "Unexpected answer from the server: HTTP " + response.status + (reason ? " (" + reason + ")" : "") + ".",
        () => lookup(uid, focusOrder));
    }
  }

  function uidFromAddress() {
    return new URLSearchParams(location.search).get("order_uid");
  }

  /** Puts `uid` in the address (a new history entry unless it is there already). */
  function remember(uid) {
    const url = "/?order_uid=" + encodeURIComponent(uid);
    if (uidFromAddress() === uid) history.replaceState({ uid }, "", url);
    else history.pushState({ uid }, "", url);
  }

  function open(uid, focusOrder) {
    input.value = uid;
    remember(uid);
    lookup(uid, focusOrder);
  }

  function showAddress() {
    const uid = uidFromAddress();
    if (uid !== null) {
      input.value = uid;
      lookup(uid, false);
    } else {
      if (inFlight) inFlight.abort();
      input.value = "";
      orderBox.hidden = true;
      document.title = "Order lookup";
      markCurrent(null);
      setState("idle", "Enter an order UID above, or pick one of the recent orders.");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const uid = input.value.trim();
    if (uid === "") {
      setState("invalid", "Type an order UID first.");
      input.focus();
      return;
    }
    open(uid, false);
  });

  window.addEventListener("popstate", showAddress);

  // ---- raw JSON and copying ------------------------------------------------

  $("copy").addEventListener("click", async () => {
    const text = $("raw-json").textContent;
    const done = (message) => setText("copy-status", message);
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      done("Copied.");
    } catch (_) {
      // Without the clipboard API (a page on plain http off localhost), select
      // the text so Ctrl+C copies it.
      const range = document.createRange();
      range.selectNodeContents($("raw-json"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      done("Selected: press Ctrl+C to copy.");
    }
  });

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
      const response = await api(url);
      if (response.status === 401) {
        recentList.replaceChildren();
        more.hidden = true;
        recentStatus.textContent = "Sign in to see the recent orders.";
        return;
      }
      body = parseJson(await response.text());
      if (!response.ok || !Array.isArray(body.orders)) {
        throw new Error((body && body.error) || "HTTP " + response.status);
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

  // ---- start ---------------------------------------------------------------

  signOut.hidden = !storedToken();
  reloadAll();
  input.focus();
})();
