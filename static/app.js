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

  /**
   * Every request to the API goes through here: the one place to add a
   * header (a bearer token, say) for all of them.
   */
  function api(url, init) {
    const options = Object.assign({}, init);
    options.headers = Object.assign({}, init && init.headers);
    return fetch(url, options);
  }

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
   * Shows one state: idle, loading, found, not-found, invalid, unavailable,
   * unreachable or error. `onRetry`, when given, adds a "Try again" button.
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
        headers: { Accept: "application/json" },
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
      const response = await api(url, { headers: { Accept: "application/json" } });
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
        const response = await api("/orders/events", { signal: controller.signal, headers });
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

  showAddress();
  loadRecent(false);
  followLive();
  input.focus();
})();
