// The dispatcher's board: open cases on a map coloured by time left, the queue beside it,
// assign / reassign and workflow steps from either, workload and today's patrol tracks.
// Data comes from the JSON API with the session cookie; writes carry If-Match (the version the
// dispatcher saw) and the CSRF token. No basemap: the tablets and offices may be offline.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("board-config").textContent);
  var MESSAGES = JSON.parse(document.getElementById("board-messages").textContent);
  var CSRF = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var LOCALE = document.documentElement.lang.indexOf("zh") === 0 ? "zh-CN" : "en-GB";
  var TIME_ZONE = "Asia/Shanghai"; // the city's clock, whatever the browser's
  var NEEDS_NOTE = new Set(config.needs_note);
  var OFFERED = new Set(config.actions); // the workflow steps the board has a button for
  var FINAL = new Set(["closed", "void"]);
  var CLOCKS = ["overdue", "due_soon", "on_time", "paused", "no_deadline"];
  var CLOCK_COLOURS = {
    overdue: "#c62828",
    due_soon: "#ef8a00",
    on_time: "#2e7d32",
    paused: "#757575",
    no_deadline: "#1565c0"
  };
  var TRACK_COLOURS = ["#6a1b9a", "#00838f", "#ad1457", "#4e342e", "#283593", "#827717", "#d84315", "#37474f"];

  var state = {
    cases: new Map(), // id -> GeoJSON feature from /api/v1/board/cases
    queue: [], // items of /api/v1/dispatch/queue, in the API's order
    queueIndex: new Map(), // id -> queue item
    workload: { people: [], departments: [] },
    patrol: { features: [] },
    selected: null, // {id, where: "queue" | "map"}: the case whose actions are open
    gridPeople: new Map(), // grid code -> promise of its duties (or null)
    loading: null, // the refresh of cases, queue and workload under way
    tracksLoading: null, // the patrol day's, which may take longer
    refreshes: 0,
    updatedAt: null
  };

  // -- small helpers -----------------------------------------------------------------------

  function t(key, values) {
    var text = MESSAGES["board." + key];
    if (text === undefined) { return key; }
    return text.replace(/\{(\w+)\}/g, function (all, name) {
      return values && values[name] !== undefined ? String(values[name]) : all;
    });
  }

  function address(name, values) {
    return config.urls[name].replace(/\{(\w+)\}/g, function (all, key) {
      return encodeURIComponent(values[key]);
    });
  }

  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (key) {
      var value = attributes[key];
      if (value === null || value === undefined || value === false) { return; }
      if (key === "hidden" || key === "disabled" || key === "required") { node[key] = true; return; }
      node.setAttribute(key, value === true ? "" : String(value));
    });
    [].concat(children === undefined ? [] : children).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function labelled(text, control) {
    return el("label", { class: "field" }, [el("span", { class: "field-label" }, text), control]);
  }

  function say(node, text, kind) {
    node.textContent = text || "";
    node.classList.toggle("is-error", kind === "error");
    node.classList.toggle("is-warning", kind === "warning");
    node.classList.toggle("is-ok", kind === "ok");
    if (text && node.isConnected && node.classList.contains("panel-message")) {
      node.scrollIntoView({ block: "nearest" });
    }
  }

  function announce(text, kind) {
    say(document.getElementById("board-message"), text, kind);
  }

  function api(method, href, body, headers) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: Object.assign({ Accept: "application/json" }, headers || {})
    };
    if (body !== undefined) {
      options.body = JSON.stringify(body);
      options.headers["Content-Type"] = "application/json";
    }
    if (method !== "GET") { options.headers["X-CSRFToken"] = CSRF; }
    return fetch(href, options).then(function (response) {
      return response.text().then(function (raw) {
        var data = null;
        try { data = raw ? JSON.parse(raw) : null; } catch (ignored) { data = null; }
        return { ok: response.ok, status: response.status, data: data };
      });
    });
  }

  function problemText(answer) {
    var body = answer.data || {};
    var parts = [body.detail || body.title || "HTTP " + answer.status];
    (body.errors || []).forEach(function (e) { parts.push(e.field + ": " + e.message); });
    return parts.join("; ");
  }

  // Every page of a paged collection (features or items), following the "next" links.
  function everyPage(href) {
    var collected = [];
    function page(url) {
      return api("GET", url).then(function (answer) {
        if (!answer.ok) { throw new Error(problemText(answer)); }
        collected = collected.concat(answer.data.features || answer.data.items || []);
        var next = (answer.data.links || []).filter(function (l) { return l.rel === "next"; })[0];
        return next ? page(next.href) : collected;
      });
    }
    return page(href);
  }

  function localTime(date, withDay) {
    var options = { timeZone: TIME_ZONE, hour: "2-digit", minute: "2-digit", hour12: false };
    if (withDay) { options.month = "2-digit"; options.day = "2-digit"; } else { options.second = "2-digit"; }
    return date.toLocaleString(LOCALE, options);
  }

  function span(ms) {
    var minutes = Math.max(1, Math.round(Math.abs(ms) / 60000));
    var days = Math.floor(minutes / 1440), hours = Math.floor((minutes % 1440) / 60);
    if (days) { return (t("days", { n: days }) + (hours ? t("hours", { n: hours }) : "")).trim(); }
    if (hours) { return (t("hours", { n: hours }) + (minutes % 60 ? t("minutes", { n: minutes % 60 }) : "")).trim(); }
    return t("minutes", { n: minutes });
  }

  // The case's clock as the board colours it: the server's flags (working calendar), in order.
  function clockOf(p) {
    if (p.paused || p.status === "parked" || p.status === "extension_requested") { return "paused"; }
    if (p.overdue) { return "overdue"; }
    if (p.warning) { return "due_soon"; }
    if (p.deadline_at) { return "on_time"; }
    return "no_deadline";
  }

  function timeText(p) {
    var clock = clockOf(p);
    if (!p.deadline_at || clock === "paused") { return t("clock." + clock); }
    var left = Date.parse(p.deadline_at) - Date.now();
    return left < 0 ? t("over", { t: span(left) }) : t("left", { t: span(left) });
  }

  // "name (detail)" with the language's own brackets.
  function aside(text, detail) {
    return t("aside", { text: text, detail: detail });
  }

  function personName(person) {
    if (!person) { return t("none"); }
    return person.display_name ? aside(person.display_name, person.username) : person.username;
  }

  // -- the case record: the board's feature, with the queue's view of it on top -----------

  var QUEUE_FIELDS = ["status", "version", "assignee", "department", "deadline_at", "overdue",
    "warning", "actions", "category", "grid_code"];

  function setQueue(items) {
    state.queue = items;
    state.queueIndex = new Map(items.map(function (item) { return [item.id, item]; }));
  }

  function queueItem(id) {
    return state.queueIndex.get(id) || null;
  }

  function caseInfo(id) {
    var feature = state.cases.get(id);
    var info = Object.assign({ id: id }, feature ? feature.properties : {});
    var item = queueItem(id);
    if (item) {
      QUEUE_FIELDS.forEach(function (key) { info[key] = item[key]; });
      info.group = item.group;
      info.suggestion = item.suggestion;
      if (!feature) { info.point = item.point; }
    }
    info.point = feature ? feature.geometry.coordinates : info.point;
    return info;
  }

  // -- the map ---------------------------------------------------------------------------

  var map = L.map("board-map", { maxZoom: 19, minZoom: 8, zoomSnap: 0.25 }).setView([23.02, 113.11], 12);
  window.gridopsMap = map; // as on the landing page: for tests and the console
  L.control.scale({ imperial: false }).addTo(map);
  map.createPane("areas").style.zIndex = 350;
  map.createPane("cases").style.zIndex = 450;
  var caseRenderer = L.svg({ pane: "cases" });

  var gridLayer = L.vectorGrid.protobuf(config.urls.grid_tiles, {
    rendererFactory: L.canvas.tile,
    interactive: false,
    minZoom: 14,
    maxZoom: 19,
    fetchOptions: { credentials: "same-origin" },
    vectorTileLayerStyles: {
      grids: { weight: 0.8, color: "#5b6f86", opacity: 0.9, fill: true, fillColor: "#e8eef5", fillOpacity: 0.45 }
    }
  }).addTo(map);
  var areaLayer = L.featureGroup().addTo(map);
  var trackLayer = L.featureGroup().addTo(map);
  var caseLayer = L.featureGroup().addTo(map);
  var markers = new Map();

  var overlays = {};
  overlays[t("layer.grids")] = gridLayer;
  overlays[t("layer.areas")] = areaLayer;
  overlays[t("layer.tracks")] = trackLayer;
  overlays[t("layer.cases")] = caseLayer;
  L.control.layers(null, overlays, { collapsed: false, position: "topright" }).addTo(map);

  var legend = L.control({ position: "bottomleft" });
  legend.onAdd = function () {
    var box = L.DomUtil.create("div", "board-legend");
    box.appendChild(el("p", { class: "legend-title" }, t("legend")));
    var list = el("ul");
    CLOCKS.forEach(function (clock) {
      list.appendChild(el("li", { "data-clock": clock }, [
        el("span", { class: "swatch clock-" + clock, "aria-hidden": "true" }),
        el("span", {}, t("clock." + clock)),
        el("span", { class: "legend-count" }, "")
      ]));
    });
    list.appendChild(el("li", {}, [el("span", { class: "swatch queued", "aria-hidden": "true" }), el("span", {}, t("legend.queue"))]));
    list.appendChild(el("li", {}, [el("span", { class: "swatch track", "aria-hidden": "true" }), el("span", {}, t("legend.track"))]));
    box.appendChild(list);
    L.DomEvent.disableClickPropagation(box);
    L.DomEvent.disableScrollPropagation(box);
    return box;
  };
  legend.addTo(map);

  var popup = L.popup({
    maxWidth: 400, minWidth: 320, maxHeight: 460, autoPanPadding: [24, 24], className: "case-popup"
  });
  var switching = false;
  map.on("popupclose", function (e) {
    if (e.popup !== popup || switching) { return; }
    if (state.selected && state.selected.where === "map") { clearSelection(); }
  });

  function loadAreas() {
    var requests = [];
    function outline(data, style) {
      L.geoJSON(data, { pane: "areas", interactive: false, style: style }).addTo(areaLayer);
    }
    var child = { district: "town", town: "community" };
    if (config.everywhere) {
      requests.push(api("GET", config.urls.areas + "?level=district&limit=1000").then(function (a) {
        if (a.ok) { outline(a.data, { color: "#0b4f8a", weight: 2.5, fill: false }); }
      }));
    } else {
      config.areas.forEach(function (area) {
        requests.push(api("GET", address("area", { code: area.code })).then(function (a) {
          if (a.ok) { outline(a.data, { color: "#0b4f8a", weight: 3, fill: false }); }
        }));
        if (child[area.level]) {
          var href = config.urls.areas + "?level=" + child[area.level] + "&parent=" + area.code + "&limit=1000";
          requests.push(api("GET", href).then(function (a) {
            if (a.ok) { outline(a.data, { color: "#2c6e9b", weight: 1.2, fill: false, dashArray: "4 3" }); }
          }));
        }
      });
    }
    return Promise.all(requests).then(function () {
      if (areaLayer.getLayers().length) { map.fitBounds(areaLayer.getBounds(), { padding: [12, 12] }); }
      document.body.dataset.areas = String(areaLayer.getLayers().length);
    });
  }

  function markerStyle(id) {
    var info = caseInfo(id);
    var queued = !!queueItem(id);
    var selected = !!state.selected && state.selected.id === id;
    return {
      radius: selected ? 12 : 8,
      color: selected ? "#000" : queued ? "#111" : "#fff",
      weight: selected ? 4 : queued ? 3 : 1.5,
      fillColor: CLOCK_COLOURS[clockOf(info)],
      fillOpacity: 0.95
    };
  }

  function drawCases() {
    caseLayer.clearLayers();
    markers.clear();
    var counts = {};
    var ids = Array.from(state.cases.keys());
    state.queue.forEach(function (item) { if (!state.cases.has(item.id)) { ids.push(item.id); } });
    ids.forEach(function (id) {
      var info = caseInfo(id);
      if (!info.point) { return; }
      var clock = clockOf(info);
      counts[clock] = (counts[clock] || 0) + 1;
      var marker = L.circleMarker([info.point[1], info.point[0]], Object.assign({
        renderer: caseRenderer,
        className: "case-marker case-" + id + " clock-" + clock
      }, markerStyle(id)));
      // Text, never HTML: names come from the catalogue and people (Leaflet sets a string as HTML).
      marker.bindTooltip(el("span", null, "#" + id + " " + info.category.name + " · " + t("status." + info.status) + " · " + timeText(info)));
      marker.on("click", function () { select(id, "map"); });
      markers.set(id, marker);
      caseLayer.addLayer(marker);
    });
    document.querySelectorAll(".board-legend li[data-clock]").forEach(function (item) {
      item.querySelector(".legend-count").textContent = "(" + (counts[item.dataset.clock] || 0) + ")";
    });
    document.getElementById("board").dataset.cases = String(markers.size);
  }

  function restyle() {
    markers.forEach(function (marker, id) {
      marker.setStyle(markerStyle(id));
      marker.setRadius(markerStyle(id).radius);
      if (state.selected && state.selected.id === id) { marker.bringToFront(); }
    });
    document.querySelectorAll(".queue-item").forEach(function (li) {
      li.classList.toggle("is-selected", !!state.selected && Number(li.dataset.caseId) === state.selected.id);
    });
  }

  function trackColour(userId) {
    return TRACK_COLOURS[userId % TRACK_COLOURS.length];
  }

  function drawTracks() {
    trackLayer.clearLayers();
    (state.patrol.features || []).forEach(function (feature) {
      if (!feature.geometry) { return; }
      var p = feature.properties, colour = trackColour(feature.id);
      var name = p.display_name || p.username;
      var label = name + " · " + t("track.km", { km: (p.distance_m / 1000).toFixed(2) }) +
        (p.first_at ? " · " + localTime(new Date(p.first_at)) + "–" + localTime(new Date(p.last_at)) : "");
      var shape = L.geoJSON(feature, {
        style: { color: colour, weight: 3.5, opacity: 0.85, className: "patrol-track track-" + feature.id },
        pointToLayer: function (f, latlng) {
          return L.circleMarker(latlng, { radius: 5, color: colour, className: "patrol-track track-" + feature.id });
        }
      }).bindTooltip(el("span", null, label));
      trackLayer.addLayer(shape);
      var line = feature.geometry.type === "LineString" ? feature.geometry.coordinates : null;
      if (line && line.length) {
        var last = line[line.length - 1];
        trackLayer.addLayer(L.circleMarker([last[1], last[0]], {
          radius: 5, color: "#fff", weight: 2, fillColor: colour, fillOpacity: 1, className: "patrol-now"
        }).bindTooltip(el("span", null, label)));
      }
    });
    document.getElementById("board").dataset.tracks = String(
      (state.patrol.features || []).filter(function (f) { return f.geometry; }).length);
  }

  // -- the queue -------------------------------------------------------------------------

  function queueLine(info) {
    var parts = [];
    if (info.grid_code) { parts.push(t("field.grid") + " " + info.grid_code); }
    parts.push(t("pair", { label: t("field.assignee"), value: personName(info.assignee) }));
    if (info.suggestion && info.suggestion.department) {
      parts.push(t("pair", { label: t("field.suggestion"), value: info.suggestion.department.name }));
    }
    return parts.join(" · ");
  }

  function renderQueue() {
    var list = document.getElementById("queue-list");
    list.textContent = "";
    document.getElementById("queue-count").textContent = t("queue.count", { n: state.queue.length });
    if (!state.queue.length) {
      list.appendChild(el("p", { class: "queue-empty" }, t("queue.empty")));
      return;
    }
    config.groups.forEach(function (group) {
      var items = state.queue.filter(function (item) { return item.group === group; });
      if (!items.length) { return; }
      var heading = el("h3", { id: "queue-group-" + group, class: "queue-group-title" },
        aside(t("group." + group), items.length));
      var ol = el("ol", { class: "queue-items", "aria-labelledby": "queue-group-" + group });
      items.forEach(function (item) { ol.appendChild(queueEntry(item.id)); });
      list.appendChild(el("section", { class: "queue-group group-" + group }, [heading, ol]));
    });
  }

  function queueEntry(id) {
    var info = caseInfo(id), clock = clockOf(info);
    var head = el("button", {
      type: "button", class: "queue-head", "aria-expanded": "false", "aria-controls": "queue-panel-" + id
    }, [
      el("span", { class: "dot clock-" + clock, "aria-hidden": "true" }),
      el("span", { class: "queue-title" }, "#" + id + " " + info.category.name),
      el("span", { class: "queue-status" }, [
        t("status." + info.status) + " · ",
        el("span", { class: "queue-left clock-text-" + clock }, timeText(info))
      ]),
      el("span", { class: "queue-sub" }, queueLine(info))
    ]);
    head.addEventListener("click", function () {
      if (state.selected && state.selected.id === id && state.selected.where === "queue") {
        clearSelection();
      } else {
        select(id, "queue");
      }
    });
    var panel = el("div", { class: "queue-panel", id: "queue-panel-" + id, hidden: true });
    return el("li", { class: "queue-item clock-" + clock, "data-case-id": id }, [head, panel]);
  }

  // -- selection: one case's actions open, in the queue or in the map's popup ----------------

  function collapseQueue() {
    markers.forEach(function (marker) { marker.closeTooltip(); });
    document.querySelectorAll(".queue-item .queue-panel").forEach(function (panel) {
      panel.hidden = true;
      panel.textContent = "";
    });
    document.querySelectorAll(".queue-head[aria-expanded=true]").forEach(function (head) {
      head.setAttribute("aria-expanded", "false");
    });
  }

  function closePopup() {
    switching = true;
    map.closePopup(popup);
    switching = false;
  }

  function clearSelection() {
    state.selected = null;
    collapseQueue();
    closePopup();
    restyle();
    showUpdated();
  }

  // Open the case's actions in the queue (and show it on the map) or in the map's popup (and
  // point at it in the queue); ``message`` goes into the panel once it is on the page.
  function select(id, where, message, kind) {
    var info = caseInfo(id);
    collapseQueue();
    state.selected = { id: id, where: where };
    var latlng = info.point ? L.latLng(info.point[1], info.point[0]) : null;
    var panel = buildPanel(id);
    if (where === "queue") {
      closePopup();
      var li = document.querySelector('.queue-item[data-case-id="' + id + '"]');
      if (li) {
        var holder = li.querySelector(".queue-panel");
        holder.appendChild(panel);
        holder.hidden = false;
        li.querySelector(".queue-head").setAttribute("aria-expanded", "true");
      }
      if (latlng) {
        map.setView(latlng, Math.max(map.getZoom(), 15));
        var marker = markers.get(id);
        if (marker) { marker.openTooltip(); }
      }
    } else if (latlng) {
      switching = true;
      popup.setLatLng(latlng).setContent(panel);
      if (!map.hasLayer(popup)) { popup.openOn(map); } else { popup.update(); }
      switching = false;
      var entry = document.querySelector('.queue-item[data-case-id="' + id + '"]');
      if (entry) { entry.scrollIntoView({ block: "nearest" }); }
    }
    if (message) { say(panel.querySelector(".panel-message"), message, kind); }
    restyle();
    showUpdated();
  }

  function gridPeople(code) {
    if (!state.gridPeople.has(code)) {
      state.gridPeople.set(code, api("GET", address("grid_people", { grid_code: code })).then(function (a) {
        return a.ok ? a.data : null;
      }, function () { return null; }));
    }
    return state.gridPeople.get(code);
  }

  function buildPanel(id) {
    var info = caseInfo(id);
    var panel = el("div", { class: "case-panel", "data-case-id": id, "data-version": info.version });
    panel.appendChild(el("p", { class: "case-title" }, [
      el("strong", {}, t("case") + " #" + id), " " + aside(info.category.name, info.category.code)
    ]));
    var rows = [
      ["status", t("status." + info.status)],
      ["deadline", (info.deadline_at ? localTime(new Date(info.deadline_at), true) + " · " : "") + timeText(info)],
      ["grid", info.grid_code || t("none")],
      ["department", info.department ? info.department.name : t("none")],
      ["assignee", personName(info.assignee)]
    ];
    if (info.suggestion) {
      var suggested = info.suggestion.department ? info.suggestion.department.name : t("none");
      rows.push(["suggestion", info.suggestion.reason ? aside(suggested, info.suggestion.reason) : suggested]);
    }
    if (info.description) { rows.push(["description", info.description]); }
    var facts = el("dl", { class: "case-facts" });
    rows.forEach(function (row) {
      facts.appendChild(el("dt", {}, t("field." + row[0])));
      facts.appendChild(el("dd", { class: "fact-" + row[0] }, row[1]));
    });
    panel.appendChild(facts);
    // The panel's messages (refusals, a stale version) sit under its title, in sight.
    var note = el("p", { class: "panel-message", role: "status", "aria-live": "polite" });
    panel.insertBefore(note, facts);
    if (!FINAL.has(info.status) && info.assignable !== false) {
      panel.appendChild(assignForm(id, info, note));
    }
    panel.appendChild(transitionBox(id, info, note));
    var close = el("button", { type: "button", class: "board-button subtle panel-close" }, t("close"));
    close.addEventListener("click", clearSelection);
    panel.appendChild(close);
    return panel;
  }

  function personOption(person, suffix) {
    return el("option", { value: person.id }, personName(person) + (suffix || ""));
  }

  function assignForm(id, info, note) {
    var form = el("form", { class: "assign-form", novalidate: true });
    var who = el("select", { name: "assignee" });
    who.appendChild(el("option", { value: "" }, t("assign.pick")));
    var others = el("optgroup", { label: t("assign.others") });
    state.workload.people.forEach(function (person) { others.appendChild(personOption(person)); });
    who.appendChild(others);
    if (info.grid_code) {
      gridPeople(info.grid_code).then(function (duties) {
        if (!duties) { return; }
        var people = (duties.primary ? [duties.primary] : []).concat(duties.stand_ins || []);
        if (!people.length) { return; }
        var chosen = who.value; // moving the chosen option must not lose the choice
        var group = el("optgroup", { label: t("assign.grid_people") });
        people.forEach(function (person) {
          var same = others.querySelector('option[value="' + person.id + '"]');
          if (same) { others.removeChild(same); }
          group.appendChild(personOption(person, person === duties.primary ? t("assign.primary") : ""));
        });
        who.insertBefore(group, others);
        who.value = chosen;
      });
    }
    var department = el("select", { name: "department" });
    department.appendChild(el("option", { value: "" }, t("assign.keep")));
    state.workload.departments.forEach(function (d) {
      department.appendChild(el("option", { value: d.code }, aside(d.name, d.code)));
    });
    var text = el("input", { type: "text", name: "note", maxlength: 500, autocomplete: "off" });
    var submit = el("button", { type: "submit", class: "board-button primary assign-submit" },
      info.assignee ? t("reassign.submit") : t("assign.submit"));
    form.appendChild(labelled(t("assign.to"), who));
    form.appendChild(labelled(t("assign.department"), department));
    form.appendChild(labelled(t("assign.note"), text));
    form.appendChild(submit);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!who.value) {
        say(note, t("assign.need"), "error");
        who.focus();
        return;
      }
      var body = { assignee: Number(who.value) };
      if (department.value) { body.department = department.value; }
      if (text.value.trim()) { body.note = text.value.trim(); }
      var name = who.options[who.selectedIndex].textContent;
      send(id, info, address("assign", { case_id: id }), body, note, function () {
        return t("assign.done", { id: id, who: name });
      });
    });
    return form;
  }

  function transitionBox(id, info, note) {
    var box = el("div", { class: "transition-box" });
    var actions = FINAL.has(info.status) ? [] : (info.actions || []).filter(function (a) { return OFFERED.has(a); });
    if (!actions.length) {
      box.appendChild(el("p", { class: "muted" }, t("transition.none")));
      return box;
    }
    var reason = el("input", { type: "text", name: "transition-note", maxlength: 500, autocomplete: "off" });
    box.appendChild(labelled(t("transition.note"), reason));
    var buttons = el("div", { class: "transition-buttons" });
    actions.forEach(function (action) {
      var button = el("button", { type: "button", class: "board-button action-" + action, "data-action": action },
        t("action." + action));
      button.addEventListener("click", function () {
        var label = t("action." + action);
        if (NEEDS_NOTE.has(action) && !reason.value.trim()) {
          say(note, t("transition.need_note", { action: label }), "error");
          reason.focus();
          return;
        }
        var body = { action: action };
        if (reason.value.trim()) { body.note = reason.value.trim(); }
        send(id, info, address("transition", { case_id: id }), body, note, function (result) {
          return t("transition.done", { id: id, action: label, status: t("status." + result.status) });
        });
      });
      buttons.appendChild(button);
    });
    box.appendChild(buttons);
    return box;
  }

  function setBusy(id, busy) {
    document.querySelectorAll('.case-panel[data-case-id="' + id + '"]').forEach(function (panel) {
      panel.setAttribute("aria-busy", busy ? "true" : "false");
      panel.querySelectorAll("button, select, input").forEach(function (control) { control.disabled = busy; });
    });
  }

  // A versioned write with the version the dispatcher saw. Stale (412) or no longer possible
  // (409: the case moved on): reload that case, show it again with a message, let them retry.
  function send(id, info, href, body, note, done) {
    setBusy(id, true);
    say(note, t("working"));
    return api("POST", href, body, { "If-Match": '"' + info.version + '"' }).then(function (answer) {
      if (answer.ok) {
        announce(done(answer.data), "ok");
        state.selected = null;
        collapseQueue();
        closePopup();
        return refresh();
      }
      if (answer.status === 412 || answer.status === 409) {
        return reloadCase(id, answer, info.version);
      }
      setBusy(id, false);
      say(note, t("failed", { detail: problemText(answer) }), "error");
      if (answer.status === 404) { announce(t("gone", { id: id }), "warning"); }
      return null;
    }).catch(function (error) {
      setBusy(id, false);
      say(note, t("failed", { detail: error.message }), "error");
    });
  }

  function reloadCase(id, conflict, seen) {
    var where = state.selected ? state.selected.where : "map";
    return api("GET", address("case", { case_id: id })).then(function (answer) {
      if (!answer.ok || FINAL.has(answer.data.properties.status)) {
        state.cases.delete(id);
        setQueue(state.queue.filter(function (item) { return item.id !== id; }));
        state.selected = null;
        collapseQueue();
        closePopup();
        drawCases();
        renderQueue();
        restyle();
        var status = answer.ok ? t("status." + answer.data.properties.status) : "";
        announce(answer.ok ? t("stale", { id: id, version: answer.data.properties.version, status: status })
          : t("gone", { id: id }), "warning");
        return null;
      }
      var feature = answer.data, p = feature.properties;
      state.cases.set(id, feature);
      var item = queueItem(id);
      if (item) {
        QUEUE_FIELDS.forEach(function (key) { if (key in p) { item[key] = p[key]; } });
      }
      // Unchanged since the dispatcher saw it: the step itself was refused, say why.
      var changed = p.version !== seen;
      var message = changed ? t("stale", { id: id, version: p.version, status: t("status." + p.status) })
        : t("failed", { detail: problemText(conflict) });
      drawCases();
      renderQueue();
      select(id, where === "queue" && queueItem(id) ? "queue" : "map", message, changed ? "warning" : "error");
      return null;
    });
  }

  // -- workload and patrols --------------------------------------------------------------

  function cell(value, warn) {
    return el("td", { class: warn && value > 0 ? "num warn" : "num" }, String(value));
  }

  function renderWorkload() {
    var tracks = new Map();
    (state.patrol.features || []).forEach(function (f) { tracks.set(f.id, f); });
    var people = document.querySelector("#workload-people tbody");
    people.textContent = "";
    state.workload.people.forEach(function (person) {
      var track = tracks.get(person.id);
      var p = track ? track.properties : null;
      var drawn = track && track.geometry;
      var name = el("th", { scope: "row" }, [
        drawn ? el("span", { class: "track-swatch", "data-colour": trackColour(person.id), "aria-hidden": "true" }) : null,
        personName(person)
      ]);
      var trackText = drawn ? t("track.km", { km: (p.distance_m / 1000).toFixed(2) }) : t("track.none");
      var coverage = p && p.grids_total ? p.visited_count + " / " + p.grids_total : "—";
      people.appendChild(el("tr", { "data-user-id": person.id }, [
        name, cell(person.open), cell(person.due_today, true), cell(person.overdue, true),
        cell(person.tasks_today), el("td", {}, trackText), el("td", { class: "num" }, coverage)
      ]));
    });
    if (!state.workload.people.length) {
      people.appendChild(el("tr", {}, el("td", { colspan: 7 }, t("workload.empty"))));
    }
    document.querySelectorAll(".track-swatch").forEach(function (swatch) {
      swatch.style.backgroundColor = swatch.dataset.colour; // set from script: no inline style in HTML
    });
    var departments = document.querySelector("#workload-departments tbody");
    departments.textContent = "";
    state.workload.departments.forEach(function (d) {
      departments.appendChild(el("tr", { "data-department": d.code }, [
        el("th", { scope: "row" }, aside(d.name, d.code)),
        cell(d.open), cell(d.due_today, true), cell(d.overdue, true)
      ]));
    });
    if (!state.workload.departments.length) {
      departments.appendChild(el("tr", {}, el("td", { colspan: 4 }, t("workload.empty"))));
    }
  }

  // -- refreshing ------------------------------------------------------------------------

  function showUpdated() {
    if (!state.updatedAt) { return; }
    var time = localTime(state.updatedAt);
    var auto = document.getElementById("board-auto").checked;
    document.getElementById("board-updated").textContent =
      auto && state.selected ? t("paused", { t: time }) : t("updated", { t: time });
  }

  // Cases, queue and workload are drawn together (the map and the queue must agree); the
  // patrol tracks follow when they come, so a slow track query never holds up the board.
  function refresh() {
    if (state.loading) { return state.loading; }
    var board = document.getElementById("board");
    board.setAttribute("aria-busy", "true");
    var core = Promise.all([
      everyPage(config.urls.cases + "?limit=1000"),
      everyPage(config.urls.queue + "?limit=500"),
      api("GET", config.urls.workload)
    ]).then(function (answers) {
      state.cases = new Map();
      answers[0].forEach(function (feature) { state.cases.set(feature.id, feature); });
      setQueue(answers[1]);
      if (answers[2].ok) { state.workload = answers[2].data; }
      state.gridPeople.clear();
      drawCases();
      renderQueue();
      renderWorkload();
      var kept = state.selected;
      if (kept) {
        var still = kept.where === "queue" ? !!queueItem(kept.id) : state.cases.has(kept.id);
        if (still) {
          select(kept.id, kept.where);
        } else {
          clearSelection();
          announce(t("gone", { id: kept.id }), "warning");
        }
      } else {
        restyle();
      }
      state.updatedAt = new Date();
      state.refreshes += 1;
      board.dataset.refreshes = String(state.refreshes);
      showUpdated();
      if (!document.body.dataset.boardReady) {
        document.body.dataset.boardReady = String(Math.round(performance.now()));
      }
    });
    if (!state.tracksLoading) {
      state.tracksLoading = api("GET", config.urls.patrol).then(function (answer) {
        if (answer.ok) { state.patrol = answer.data; }
        return core.catch(function () { return null; });
      }).then(function () {
        drawTracks();
        renderWorkload();
        if (!document.body.dataset.tracksReady) {
          document.body.dataset.tracksReady = String(Math.round(performance.now()));
        }
      }).catch(function () { return null; }).then(function () { state.tracksLoading = null; });
    }
    state.loading = core.catch(function (error) {
      announce(t("load_failed", { detail: error.message }), "error");
    }).then(function () {
      board.setAttribute("aria-busy", "false");
      state.loading = null;
    });
    return state.loading;
  }

  document.getElementById("board-refresh").addEventListener("click", function () { refresh(); });
  document.getElementById("board-auto").addEventListener("change", showUpdated);
  // Automatic refresh leaves an open case alone (its form would be wiped under the
  // dispatcher's hands); the button always refreshes.
  window.setInterval(function () {
    if (!document.getElementById("board-auto").checked || document.hidden || state.selected) {
      showUpdated();
      return;
    }
    refresh();
  }, config.refresh_seconds * 1000);

  loadAreas();
  refresh();
})();
