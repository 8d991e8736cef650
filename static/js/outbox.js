// The tablet's outbox: every report is stored in IndexedDB first (with its client UUID, capture
// time and photo Blobs), then a sync loop sends the entries one by one. An entry is deleted
// only after a 2xx; a 4xx marks it "attention" (kept, with the server's problem, until the
// inspector retries or discards it); 401 or a CSRF 400 pauses the loop (the session ended);
// anything else (5xx, no network) is retried later with a growing delay.
// Exposes window.GridopsOutbox = { Outbox, Sync, newUuid, classify }.
(function (global) {
  "use strict";

  var DB_NAME = "gridops-tablet";
  var DB_VERSION = 1;
  var STORE = "outbox";
  var META = "meta";
  var RETRY_BASE_MS = 5000;
  var RETRY_MAX_MS = 5 * 60 * 1000;
  var IDLE_CHECK_MS = 60 * 1000;
  var SEND_TIMEOUT_MS = 120 * 1000; // photos over a weak mobile link take a while

  function newUuid() {
    if (global.crypto && typeof global.crypto.randomUUID === "function") {
      return global.crypto.randomUUID();
    }
    // randomUUID needs a secure context; getRandomValues does not.
    var b = new Uint8Array(16);
    global.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); });
    return h.slice(0, 4).join("") + "-" + h.slice(4, 6).join("") + "-" + h.slice(6, 8).join("") +
      "-" + h.slice(8, 10).join("") + "-" + h.slice(10).join("");
  }

  // -- storage ------------------------------------------------------------------------------

  function Outbox() {
    this.db = global.idb.openDB(DB_NAME, DB_VERSION, {
      upgrade: function (db) {
        var store = db.createObjectStore(STORE, { keyPath: "uuid" });
        store.createIndex("created", "created");
        db.createObjectStore(META);
      }
    });
  }

  Outbox.prototype.add = async function (entry) {
    var db = await this.db;
    await db.add(STORE, entry); // add, not put: a UUID is never reused for another report
  };

  Outbox.prototype.put = async function (entry) {
    var db = await this.db;
    await db.put(STORE, entry);
  };

  Outbox.prototype.get = async function (uuid) {
    var db = await this.db;
    return db.get(STORE, uuid);
  };

  Outbox.prototype.remove = async function (uuid) {
    var db = await this.db;
    await db.delete(STORE, uuid);
  };

  Outbox.prototype.all = async function () {
    var db = await this.db;
    return db.getAllFromIndex(STORE, "created"); // oldest first: sent in the order logged
  };

  Outbox.prototype.getMeta = async function (key) {
    var db = await this.db;
    return db.get(META, key);
  };

  Outbox.prototype.setMeta = async function (key, value) {
    var db = await this.db;
    await db.put(META, value, key);
  };

  // -- what an answer means -------------------------------------------------------------------

  function classify(status, problem) {
    if (status >= 200 && status < 300) { return "sent"; }
    if (status === 401) { return "session"; }
    var text = problem ? JSON.stringify(problem) : "";
    if (status === 400 && /csrf/i.test(text)) { return "session"; } // token of an ended session
    if (status === 408 || status === 429 || status >= 500) { return "retry"; }
    if (status >= 400) { return "attention"; }
    return "retry"; // no answer, or one we do not understand: keep it and try again later
  }

  async function readProblem(response) {
    var raw = "";
    try {
      raw = await response.text();
      var body = JSON.parse(raw);
      return {
        status: response.status,
        type: typeof body.type === "string" ? body.type : null,
        title: body.title || null,
        detail: body.detail || null,
        errors: Array.isArray(body.errors) ? body.errors : []
      };
    } catch (e) {
      return { status: response.status, type: null, title: null, detail: raw.slice(0, 300), errors: [] };
    }
  }

  // -- the sync loop ----------------------------------------------------------------------------

  // options: outbox, endpoint, userId, csrfToken(), onChange(state), onSent(entry, body),
  // onRefused(entry)
  function Sync(options) {
    this.outbox = options.outbox;
    this.endpoint = options.endpoint;
    this.userId = options.userId;
    this.csrfToken = options.csrfToken;
    this.onChange = options.onChange || function () {};
    this.onSent = options.onSent || function () {};
    this.onRefused = options.onRefused || function () {};
    this.running = false;
    this.again = false;
    this.paused = null; // "session" while the session is over
    this.failures = 0;
    this.timer = null;
    this.message = null; // "retry" | "session" | "syncing" | null
    this.lastSync = null;
    this.entries = [];
  }

  Sync.prototype.start = async function () {
    var self = this;
    this.lastSync = (await this.outbox.getMeta("lastSync:" + this.userId)) || null;
    await this.refresh();
    global.addEventListener("online", function () { self.failures = 0; self.kick(); });
    global.addEventListener("offline", function () { self.refresh(); });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") { self.kick(); }
    });
    this.kick();
  };

  Sync.prototype.state = function () {
    var mine = this.userId;
    var attention = this.entries.filter(function (e) { return e.state === "attention"; }).length;
    var pending = this.entries.filter(function (e) {
      return e.state === "pending" && e.user_id === mine;
    }).length;
    return {
      total: this.entries.length,
      pending: pending,
      attention: attention,
      entries: this.entries,
      lastSync: this.lastSync,
      paused: this.paused,
      running: this.running,
      message: this.message,
      online: global.navigator.onLine !== false
    };
  };

  Sync.prototype.refresh = async function () {
    this.entries = await this.outbox.all();
    this.onChange(this.state());
  };

  Sync.prototype.schedule = function (delay) {
    var self = this;
    if (this.timer) { clearTimeout(this.timer); }
    this.timer = setTimeout(function () { self.timer = null; self.kick(); }, delay);
  };

  // Run the loop now (or right after the current run).
  Sync.prototype.kick = function () {
    var self = this;
    if (this.running) { this.again = true; return Promise.resolve(); }
    var run = function () { return self.run(); };
    // One tab sends at a time: two tabs replaying one entry would both get through (the
    // server answers the second with 200), but sequential sends keep the answers readable.
    if (global.navigator.locks && global.navigator.locks.request) {
      return global.navigator.locks.request("gridops-outbox-sync", { ifAvailable: true }, function (lock) {
        return lock ? run() : null;
      });
    }
    return run();
  };

  Sync.prototype.run = async function () {
    this.running = true;
    try {
      do {
        this.again = false;
        await this.pass();
      } while (this.again && !this.paused);
    } finally {
      this.running = false;
      await this.refresh();
    }
  };

  Sync.prototype.pass = async function () {
    var entries = await this.outbox.all();
    var mine = this.userId;
    var due = entries.filter(function (e) { return e.state === "pending" && e.user_id === mine; });
    if (this.paused || !due.length) {
      if (!this.paused) { this.message = null; }
      this.schedule(IDLE_CHECK_MS);
      return;
    }
    if (global.navigator.onLine === false) { // the "online" event restarts the loop
      this.message = null;
      this.schedule(IDLE_CHECK_MS);
      return;
    }
    this.message = "syncing";
    this.onChange(this.state());
    for (var i = 0; i < due.length; i++) {
      var outcome = await this.send(due[i]);
      if (outcome === "session") {
        this.paused = "session";
        this.message = "session";
        return;
      }
      if (outcome === "retry") {
        this.failures += 1;
        var delay = Math.min(RETRY_BASE_MS * Math.pow(2, this.failures - 1), RETRY_MAX_MS);
        this.message = "retry";
        this.schedule(delay * (0.75 + Math.random() * 0.5));
        return;
      }
      await this.refresh();
    }
    this.failures = 0;
    this.message = null;
    this.schedule(IDLE_CHECK_MS);
  };

  function formFor(entry) {
    var form = new FormData();
    form.append("report", JSON.stringify(entry.report));
    (entry.photos || []).forEach(function (photo, n) {
      form.append("photos", photo.blob, photo.name || "photo-" + (n + 1) + ".jpg");
    });
    return form;
  }

  // Send one entry; returns "sent" | "attention" | "session" | "retry".
  Sync.prototype.send = async function (entry) {
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timeout = controller ? setTimeout(function () { controller.abort(); }, SEND_TIMEOUT_MS) : null;
    var response;
    try {
      response = await fetch(this.endpoint, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": this.csrfToken(), Accept: "application/json" },
        body: formFor(entry),
        signal: controller ? controller.signal : undefined
      });
    } catch (e) {
      return "retry"; // offline, refused, timed out
    } finally {
      if (timeout) { clearTimeout(timeout); }
    }
    var problem = response.ok ? null : await readProblem(response);
    var outcome = classify(response.status, problem);
    if (outcome === "sent") {
      var result = null;
      try { result = await response.json(); } catch (e) { result = null; }
      await this.outbox.remove(entry.uuid);
      this.lastSync = new Date().toISOString();
      await this.outbox.setMeta("lastSync:" + this.userId, this.lastSync);
      this.onSent(entry, result);
    } else if (outcome === "attention") {
      entry.state = "attention";
      entry.problem = problem;
      entry.attempts = (entry.attempts || 0) + 1;
      await this.outbox.put(entry);
      this.onRefused(entry);
    }
    return outcome;
  };

  // The inspector asks to send an entry again (after fixing the cause elsewhere).
  Sync.prototype.retry = async function (uuid) {
    var entry = await this.outbox.get(uuid);
    if (!entry) { return; }
    entry.state = "pending";
    entry.problem = null;
    await this.outbox.put(entry);
    this.failures = 0;
    await this.refresh();
    return this.kick();
  };

  Sync.prototype.discard = async function (uuid) {
    await this.outbox.remove(uuid);
    await this.refresh();
  };

  Sync.prototype.add = async function (entry) {
    await this.outbox.add(entry);
    await this.refresh();
    this.failures = 0;
    this.kick();
  };

  global.GridopsOutbox = { Outbox: Outbox, Sync: Sync, newUuid: newUuid, classify: classify };
})(window);
