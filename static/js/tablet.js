// The inspector's tablet: their grids with enterprises, outlets, open cases and today's tasks
// on a map without basemap; logging an incident (GPS or a tap, a searchable two-level
// category list, camera photos, a note) into the IndexedDB outbox (outbox.js), which sends
// it when the network allows. A service worker (/sw.js) keeps the page and its data for
// offline use after one online visit.
(function () {
  "use strict";

  var settings = JSON.parse(document.getElementById("tablet-settings").textContent);
  var MESSAGES = JSON.parse(document.getElementById("tablet-messages").textContent);
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var OutboxLib = window.GridopsOutbox;

  var API = settings.api; // built by the server; the service worker caches them by URL
  var INCIDENTS = "/api/v1/incidents";
  var TILE_URL = "/api/v1/tiles/{layer}/{z}/{x}/{y}.pbf";
  var VECTORGRID_JS = "/static/vendor/leaflet.vectorgrid/Leaflet.VectorGrid.bundled.min.js";

  function t(key, vars) {
    var text = MESSAGES["tablet." + key];
    if (text === undefined) { return key; }
    Object.keys(vars || {}).forEach(function (k) { text = text.split("{" + k + "}").join(String(vars[k])); });
    return text;
  }

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; }
      else if (k === "className") { node.className = attrs[k]; }
      else if (k.slice(0, 5) === "data-" || k.slice(0, 5) === "aria-" || k === "type" || k === "role" || k === "title" || k === "for") {
        node.setAttribute(k, attrs[k]);
      } else { node[k] = attrs[k]; }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return node;
  }

  var locale = settings.lang === "en" ? "en-GB" : "zh-CN";
  function formatTime(iso) {
    if (!iso) { return ""; }
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return iso; }
    // Foshan time, as the server's deadlines and working days, whatever the tablet is set to.
    return d.toLocaleString(locale, { timeZone: settings.timezone, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  // -- the map ------------------------------------------------------------------------------

  var map = L.map("map", { maxZoom: 19, zoomSnap: 0.5, attributionControl: false });
  if (settings.extent) {
    var e = settings.extent;
    map.fitBounds([[e[1], e[0]], [e[3], e[2]]], { padding: [12, 12] });
  } else {
    map.setView([23.02, 113.12], 11); // Foshan
  }
  L.control.scale({ imperial: false, position: "bottomright" }).addTo(map);

  // Grid numbers go under the markers (tooltips are above them by default).
  map.createPane("gridLabels").style.zIndex = 590;

  function clusterIcon(kind) {
    return function (cluster) {
      var n = cluster.getChildCount();
      return L.divIcon({
        className: "cluster cluster-" + kind,
        html: "<span>" + n + "</span>",
        iconSize: L.point(44, 44)
      });
    };
  }

  function pointIcon(kind, label) {
    return L.divIcon({ className: "pin pin-" + kind, html: "<span>" + label + "</span>", iconSize: L.point(36, 36) });
  }

  var layers = {
    grids: L.featureGroup(),
    enterprises: L.markerClusterGroup({ iconCreateFunction: clusterIcon("enterprise"), showCoverageOnHover: false, maxClusterRadius: 48 }),
    outlets: L.markerClusterGroup({ iconCreateFunction: clusterIcon("outlet"), showCoverageOnHover: false, maxClusterRadius: 48 }),
    cases: L.markerClusterGroup({ iconCreateFunction: clusterIcon("case"), showCoverageOnHover: false, maxClusterRadius: 40 }),
    tasks: L.featureGroup(),
    report: L.featureGroup()
  };
  Object.keys(layers).forEach(function (k) { layers[k].addTo(map); });
  window.gridopsTablet = { map: map, layers: layers }; // for tests and debugging (cf. index.js)
  var overlays = {};
  overlays[t("layer_grids")] = layers.grids;
  overlays[t("layer_enterprises")] = layers.enterprises;
  overlays[t("layer_outlets")] = layers.outlets;
  overlays[t("layer_cases")] = layers.cases;
  overlays[t("layer_tasks")] = layers.tasks;
  L.control.layers(null, overlays, { collapsed: false, position: "topright" }).addTo(map);

  // Grid numbers only once they are big enough to read.
  function labelZoom() {
    map.getContainer().classList.toggle("labels-hidden", map.getZoom() < 16);
  }
  map.on("zoomend", labelZoom);
  labelZoom();

  function popupHtml(title, rows) {
    var box = el("div", { className: "popup" }, [el("strong", { text: title })]);
    var dl = el("dl");
    rows.forEach(function (row) {
      if (row[1] === null || row[1] === undefined || row[1] === "") { return; }
      dl.appendChild(el("dt", { text: row[0] }));
      dl.appendChild(el("dd", { text: String(row[1]) }));
    });
    box.appendChild(dl);
    return box;
  }

  function statusName(status) { return t("st_" + status); }
  function outletType(type) { var s = t("ot_" + type); return s === "ot_" + type ? type : s; }

  var loaded = { grids: null }; // the grid features (for the "inside my grids" check)

  function drawGrids(data) {
    var geo = L.geoJSON(data, {
      interactive: false,
      style: { color: "#003d73", weight: 2, fillColor: "#4a90d9", fillOpacity: 0.08 },
      onEachFeature: function (f, layer) {
        var code = f.properties.code || f.id;
        layer.bindTooltip(String(code).slice(-3), { permanent: true, direction: "center", className: "grid-label", interactive: false, pane: "gridLabels" });
      }
    });
    layers.grids.addLayer(geo);
    loaded.grids = data.features;
  }

  function drawEnterprises(data) {
    data.features.forEach(function (f) {
      var p = f.properties, c = f.geometry.coordinates;
      var marker = L.marker([c[1], c[0]], { icon: pointIcon("enterprise", "企"), title: p.name, alt: p.name });
      marker.bindPopup(popupHtml(p.name, [
        [t("f_industry"), p.industry], [t("f_risk"), p.risk_level], [t("f_uscc"), p.uscc], [t("f_address"), p.address]
      ]));
      layers.enterprises.addLayer(marker);
    });
  }

  function drawOutlets(data) {
    data.features.forEach(function (f) {
      var p = f.properties, c = f.geometry.coordinates;
      var marker = L.marker([c[1], c[0]], { icon: pointIcon("outlet", "站"), title: p.name, alt: p.name });
      marker.bindPopup(popupHtml(p.name, [
        [t("f_type"), outletType(p.outlet_type)], [t("f_address"), p.address], [t("f_hours"), p.opening_hours], [t("f_phone"), p.phone]
      ]));
      layers.outlets.addLayer(marker);
    });
  }

  var caseMarkers = {};
  function drawCases(all, mine) {
    layers.cases.clearLayers();
    caseMarkers = {};
    var waiting = {};
    (mine ? mine.features : []).forEach(function (f) { waiting[f.id] = true; });
    all.features.forEach(function (f) {
      if (!f.geometry) { return; }
      var p = f.properties, c = f.geometry.coordinates;
      var kind = p.overdue ? "case-overdue" : (waiting[f.id] ? "case-mine" : "case");
      var title = p.category_name + " #" + f.id;
      var marker = L.marker([c[1], c[0]], { icon: pointIcon(kind, "案"), title: title, alt: title });
      marker.bindPopup(popupHtml(title, [
        [t("f_status"), statusName(p.status) + (p.overdue ? " · " + t("overdue") : "")],
        [t("f_grid"), p.grid_code], [t("f_reported"), formatTime(p.reported_at)], [t("f_deadline"), formatTime(p.deadline_at)]
      ]));
      layers.cases.addLayer(marker);
      caseMarkers[f.id] = marker;
    });
    renderCaseList($("case-list"), all.features);
    renderCaseList($("my-case-list"), mine ? mine.features : []);
  }

  function renderCaseList(list, features) {
    list.textContent = "";
    if (!features.length) { list.appendChild(el("li", { className: "empty", text: t("no_cases") })); return; }
    features.forEach(function (f) {
      var p = f.properties;
      var button = el("button", { type: "button", className: "item" }, [
        el("strong", { text: p.category_name + " #" + f.id }),
        el("span", { text: statusName(p.status) + (p.overdue ? " · " + t("overdue") : "") + " · " + (p.grid_code || "") })
      ]);
      button.addEventListener("click", function () { focusMarker(caseMarkers[f.id]); });
      list.appendChild(el("li", {}, [button]));
    });
  }

  var taskMarkers = {};
  function drawTasks(data) {
    layers.tasks.clearLayers();
    taskMarkers = {};
    var list = $("task-list");
    list.textContent = "";
    var tasks = data.tasks || [];
    if (!tasks.length) { list.appendChild(el("li", { className: "empty", text: t("no_tasks") })); }
    tasks.forEach(function (task) {
      var target = task.target || {};
      var state = task.status === "done" ? t("task_done") : t("task_open");
      if (target.lat !== null && target.lat !== undefined) {
        var title = target.name || target.label || ("#" + task.id);
        var marker = L.marker([target.lat, target.lon], { icon: pointIcon(task.status === "done" ? "task-done" : "task", "检"), title: title, alt: title });
        marker.bindPopup(popupHtml(title, [
          [t("f_type"), t("kind_" + target.kind)], [t("f_status"), state], [t("f_due"), task.due_on], [t("f_address"), target.address]
        ]));
        layers.tasks.addLayer(marker);
        taskMarkers[task.id] = marker;
      }
      var button = el("button", { type: "button", className: "item", "data-task": task.id }, [
        el("strong", { text: (task.route_order ? task.route_order + ". " : "") + (target.name || target.label || "") }),
        el("span", { text: state + " · " + t("kind_" + target.kind) + (target.address ? " · " + target.address : "") })
      ]);
      button.addEventListener("click", function () { focusMarker(taskMarkers[task.id]); });
      list.appendChild(el("li", {}, [button]));
    });
  }

  function focusMarker(marker) {
    if (!marker) { return; }
    map.setView(marker.getLatLng(), Math.max(map.getZoom(), 17));
    var parent = ["enterprises", "outlets", "cases"].map(function (k) { return layers[k]; })
      .filter(function (group) { return group.hasLayer(marker); })[0];
    if (parent) { parent.zoomToShowLayer(marker, function () { marker.openPopup(); }); }
    else { marker.openPopup(); }
  }

  // Scopes too big for GeoJSON (a district manager's thousands of grids) come as vector tiles.
  var vectorGridReady = null;
  function loadVectorGrid() {
    if (!vectorGridReady) {
      vectorGridReady = new Promise(function (resolve, reject) {
        var script = el("script", { src: VECTORGRID_JS });
        script.onload = resolve;
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return vectorGridReady;
  }

  function tileLayer(name, target) {
    return loadVectorGrid().then(function () {
      var styles = {};
      styles[name] = name === "grids"
        ? { color: "#003d73", weight: 1, fill: true, fillColor: "#4a90d9", fillOpacity: 0.05 }
        : { radius: 6, color: "#ffffff", weight: 2, fill: true, fillOpacity: 1, fillColor: name === "enterprises" ? "#8a3b00" : "#1b5e20" };
      var layer = L.vectorGrid.protobuf(TILE_URL.replace("{layer}", name), {
        vectorTileLayerStyles: styles,
        interactive: name !== "grids",
        maxNativeZoom: 19,
        fetchOptions: { credentials: "same-origin" }
      });
      if (name !== "grids") {
        layer.on("click", function (e) {
          var p = e.layer.properties || {};
          L.popup().setLatLng(e.latlng).setContent(popupHtml(p.name || p.code, [[t("f_code"), p.code], [t("f_type"), p.category]])).openOn(map);
        });
      }
      target.addLayer(layer);
    });
  }

  // -- data ---------------------------------------------------------------------------------

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (r.status === 401) { sessionOver(); } // the outbox waits for a new sign-in
      if (!r.ok) { throw new Error(url + ": " + r.status); }
      return r.json();
    });
  }

  function hasNext(page) {
    return (page.links || []).some(function (l) { return l.rel === "next"; });
  }

  // A layer page: drawn as GeoJSON, or as vector tiles when the scope holds more than a page.
  function layerFrom(name, draw, target) {
    return getJSON(API[name]).then(function (page) {
      if (hasNext(page)) {
        if (name === "grids" && page.features.length) { map.fitBounds(L.geoJSON(page).getBounds()); }
        document.body.dataset["mode" + name.charAt(0).toUpperCase() + name.slice(1)] = "tiles";
        return tileLayer(name, target);
      }
      draw(page);
      return page;
    });
  }

  function loadData() {
    var gridsDone = layerFrom("grids", drawGrids, layers.grids).then(function (page) {
      if (page && page.features && page.features.length) {
        map.fitBounds(layers.grids.getBounds(), { padding: [12, 12] });
      }
    });
    var jobs = [
      gridsDone,
      layerFrom("enterprises", drawEnterprises, layers.enterprises),
      layerFrom("outlets", drawOutlets, layers.outlets),
      Promise.all([getJSON(API.cases), getJSON(API.my_cases)]).then(function (r) { drawCases(r[0], r[1]); }),
      getJSON(API.tasks).then(drawTasks)
    ];
    var settled = function (p) { return p.then(function () { return true; }, function () { return false; }); };
    return Promise.all(jobs.map(settled)).then(function (results) {
      document.body.dataset.readyMs = String(Math.round(performance.now()));
      // The category list is needed once the inspector starts a report, not for the map:
      // it loads after the map's data, so as not to slow it down.
      return settled(getJSON(API.categories).then(buildCategories, function (e) {
        $("category-list").appendChild(el("p", { className: "warning", text: t("categories_unavailable") }));
        throw e;
      })).then(function (categories) {
        var complete = results.every(Boolean) && categories;
        if (!complete) { setMessage(t("data_unavailable")); }
        document.body.dataset.ready = complete ? "1" : "partial";
        return complete;
      });
    });
  }

  function refreshCases() {
    return Promise.all([getJSON(API.cases), getJSON(API.my_cases)]).then(function (r) { drawCases(r[0], r[1]); }, function () {});
  }

  // -- point in my grids (a hint only: the server decides) -------------------------------------

  function inRing(x, y, ring) {
    var inside = false;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) { inside = !inside; }
    }
    return inside;
  }

  function gridAt(lon, lat) {
    if (!loaded.grids) { return undefined; } // unknown (tiles mode or not loaded)
    for (var i = 0; i < loaded.grids.length; i++) {
      var g = loaded.grids[i].geometry;
      var polygons = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
      for (var k = 0; k < polygons.length; k++) {
        var rings = polygons[k];
        if (inRing(lon, lat, rings[0]) && !rings.slice(1).some(function (h) { return inRing(lon, lat, h); })) {
          return loaded.grids[i].properties.code || loaded.grids[i].id;
        }
      }
    }
    return null;
  }

  // -- the report form --------------------------------------------------------------------------

  var report = { place: null, category: null, photos: [] };
  var placeMarker = null;
  var accuracyCircle = null;

  function setPlace(lat, lon, accuracy, source) {
    report.place = { lat: lat, lon: lon, accuracy: accuracy, source: source, at: new Date() };
    layers.report.clearLayers();
    accuracyCircle = null;
    if (accuracy) {
      accuracyCircle = L.circle([lat, lon], { radius: accuracy, color: "#b00020", weight: 2, fillOpacity: 0.12, interactive: false });
      layers.report.addLayer(accuracyCircle);
    }
    placeMarker = L.marker([lat, lon], { icon: pointIcon("report", "报"), title: t("layer_report"), alt: t("layer_report"), draggable: true });
    placeMarker.on("dragend", function () {
      var ll = placeMarker.getLatLng();
      setPlace(ll.lat, ll.lng, null, "tap");
    });
    layers.report.addLayer(placeMarker);
    var text = lat.toFixed(6) + ", " + lon.toFixed(6) + " · " +
      (accuracy ? t("accuracy", { m: Math.round(accuracy) }) : t("placed_by_tap"));
    var grid = gridAt(lon, lat);
    if (grid) { text += " · " + t("in_grid", { code: grid }); }
    $("place-info").textContent = text;
    $("place-info").dataset.placed = source;
    var warning = $("place-warning");
    warning.hidden = grid !== null;
    warning.textContent = grid === null ? t("outside_grids") : "";
  }

  function reportPaneActive() { return !$("pane-report").hidden; }

  map.on("click", function (e) {
    if (reportPaneActive()) { setPlace(e.latlng.lat, e.latlng.lng, null, "tap"); }
  });

  $("use-gps").addEventListener("click", function () {
    if (!navigator.geolocation) { $("place-info").textContent = t("gps_failed"); return; }
    $("place-info").textContent = t("locating");
    navigator.geolocation.getCurrentPosition(function (pos) {
      var c = pos.coords;
      setPlace(c.latitude, c.longitude, c.accuracy, "gps");
      if (accuracyCircle) { map.fitBounds(accuracyCircle.getBounds(), { maxZoom: 18 }); }
    }, function () {
      $("place-info").textContent = t("gps_failed");
    }, { enableHighAccuracy: true, timeout: 15000, maximumAge: 10000 });
  });

  // Categories: majors as expandable groups, minors as buttons; the search matches codes and
  // names (Chinese and English) of both levels.
  var categoryIndex = [];
  function buildCategories(data) {
    var box = $("category-list");
    box.textContent = "";
    categoryIndex = [];
    (data.categories || []).forEach(function (major) {
      var group = el("details", { className: "major" });
      var summary = el("summary", { text: major.code + " " + (settings.lang === "en" ? (major.name_en || major.name_zh) : (major.name_zh || major.name_en || "")) });
      group.appendChild(summary);
      var list = el("div", { className: "minors" });
      major.minors.forEach(function (minor) {
        var name = settings.lang === "en" ? (minor.name_en || minor.name_zh) : minor.name_zh;
        var button = el("button", { type: "button", className: "minor", "data-code": minor.code, text: minor.code + " " + name });
        button.addEventListener("click", function () { chooseCategory(minor.code, name); });
        list.appendChild(button);
        categoryIndex.push({
          button: button, group: group,
          haystack: [minor.code, minor.name_zh, minor.name_en, major.code, major.name_zh, major.name_en].join(" ").toLowerCase()
        });
      });
      group.appendChild(list);
      box.appendChild(group);
    });
    box.appendChild(el("p", { id: "category-none", className: "info", text: t("no_match"), hidden: true }));
  }

  $("category-search").addEventListener("input", function () {
    var words = this.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    var shownGroups = new Set();
    categoryIndex.forEach(function (item) {
      var match = words.every(function (w) { return item.haystack.indexOf(w) >= 0; });
      item.button.hidden = !match;
      if (match) { shownGroups.add(item.group); }
    });
    var any = false;
    Array.prototype.forEach.call($("category-list").querySelectorAll("details"), function (group) {
      group.hidden = !shownGroups.has(group);
      group.open = words.length > 0 && shownGroups.has(group);
      any = any || shownGroups.has(group);
    });
    var none = $("category-none");
    if (none) { none.hidden = any; }
  });

  function chooseCategory(code, name) {
    report.category = { code: code, name: name };
    $("category-chosen").textContent = t("category_chosen", { name: code + " " + name });
    $("category-chosen").dataset.code = code;
    Array.prototype.forEach.call($("category-list").querySelectorAll("button.minor"), function (b) {
      b.setAttribute("aria-pressed", b.dataset.code === code ? "true" : "false");
    });
  }

  // Photos: kept as Blobs; big camera pictures are shrunk first (the server keeps at most
  // 2048 px anyway), so the outbox and the upload over a weak link stay small.
  var SHRINK_ABOVE = 1.5 * 1024 * 1024;
  var MAX_SIDE = 2048;
  function shrink(file) {
    if (file.size <= SHRINK_ABOVE || typeof createImageBitmap !== "function") { return Promise.resolve(file); }
    return createImageBitmap(file).then(function (bitmap) {
      var scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(bitmap.width * scale);
      canvas.height = Math.round(bitmap.height * scale);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      return new Promise(function (resolve) {
        canvas.toBlob(function (blob) { resolve(blob && blob.size < file.size ? blob : file); }, "image/jpeg", 0.85);
      });
    }).catch(function () { return file; }); // undecodable here: the server will say why
  }

  $("photos").addEventListener("change", function () {
    var input = this;
    var files = Array.prototype.slice.call(input.files || []);
    input.value = "";
    var room = settings.photo_max_count - report.photos.length;
    if (files.length > room) { showFormError(t("too_many_photos", { n: settings.photo_max_count })); }
    Promise.all(files.slice(0, Math.max(room, 0)).map(function (file) {
      return shrink(file).then(function (blob) { return { blob: blob, name: file.name || "photo.jpg", type: blob.type || "image/jpeg" }; });
    })).then(function (photos) {
      report.photos = report.photos.concat(photos);
      renderPhotos();
    });
  });

  var thumbUrls = [];
  function renderPhotos() {
    thumbUrls.forEach(function (u) { URL.revokeObjectURL(u); });
    thumbUrls = [];
    var list = $("photo-list");
    list.textContent = "";
    report.photos.forEach(function (photo, n) {
      var url = URL.createObjectURL(photo.blob);
      thumbUrls.push(url);
      var remove = el("button", { type: "button", className: "remove", "aria-label": t("remove_photo") + " " + (n + 1), text: "×" });
      remove.addEventListener("click", function () { report.photos.splice(n, 1); renderPhotos(); });
      list.appendChild(el("li", {}, [el("img", { src: url, alt: photo.name }), remove]));
    });
    $("photo-info").textContent = report.photos.length ? t("photo_count", { n: report.photos.length }) : "";
    $("photo-info").dataset.count = String(report.photos.length);
  }

  function showFormError(text) {
    var box = $("form-error");
    box.textContent = text;
    box.hidden = !text;
  }

  function clearForm() {
    report = { place: null, category: null, photos: [] };
    layers.report.clearLayers();
    $("place-info").textContent = t("no_place");
    delete $("place-info").dataset.placed;
    $("place-warning").hidden = true;
    $("category-chosen").textContent = t("no_category");
    delete $("category-chosen").dataset.code;
    $("category-search").value = "";
    $("category-search").dispatchEvent(new Event("input"));
    Array.prototype.forEach.call($("category-list").querySelectorAll("button.minor"), function (b) { b.removeAttribute("aria-pressed"); });
    $("note").value = "";
    renderPhotos();
    showFormError("");
  }

  $("clear-report").addEventListener("click", clearForm);

  $("report-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (!report.place) { showFormError(t("need_place")); $("use-gps").focus(); return; }
    if (!report.category) { showFormError(t("need_category")); $("category-search").focus(); return; }
    var uuid = OutboxLib.newUuid();
    var body = {
      client_uuid: uuid,
      category: report.category.code,
      lon: Math.round(report.place.lon * 1e7) / 1e7,
      lat: Math.round(report.place.lat * 1e7) / 1e7,
      captured_at: report.place.at.toISOString(),
      description: $("note").value.trim(),
      source: "inspector"
    };
    if (report.place.accuracy) { body.accuracy_m = Math.round(report.place.accuracy * 10) / 10; }
    var entry = {
      uuid: uuid,
      user_id: settings.user.id,
      username: settings.user.username,
      created: Date.now(),
      state: "pending",
      attempts: 0,
      report: body,
      photos: report.photos,
      display: { category: report.category.code + " " + report.category.name }
    };
    sync.add(entry).then(function () {
      clearForm();
      setMessage(t("saved", { n: sync.state().total }));
    }, function (err) {
      showFormError(t("save_failed", { e: err && err.message ? err.message : String(err) }));
    });
  });

  // -- tabs -------------------------------------------------------------------------------------

  var tabs = ["report", "todo", "outbox"];
  function showTab(name) {
    tabs.forEach(function (tab) {
      var selected = tab === name;
      $("tab-" + tab).setAttribute("aria-selected", selected ? "true" : "false");
      $("tab-" + tab).tabIndex = selected ? 0 : -1;
      $("pane-" + tab).hidden = !selected;
    });
  }
  tabs.forEach(function (tab, i) {
    var button = $("tab-" + tab);
    button.addEventListener("click", function () { showTab(tab); });
    button.addEventListener("keydown", function (e) {
      var step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (!step) { return; }
      var next = tabs[(i + step + tabs.length) % tabs.length];
      showTab(next);
      $("tab-" + next).focus();
    });
  });

  $("log-incident").addEventListener("click", function () {
    showTab("report");
    var form = $("report-form");
    form.scrollIntoView({ block: "start" });
    $("use-gps").focus({ preventScroll: true });
  });

  // -- the outbox and the status bar ----------------------------------------------------------

  var outbox = new OutboxLib.Outbox();
  var sync = new OutboxLib.Sync({
    outbox: outbox,
    endpoint: INCIDENTS,
    userId: settings.user.id,
    csrfToken: function () { return csrfMeta ? csrfMeta.content : ""; },
    onChange: render,
    onRefused: function () { flash = t("refused"); },
    onSent: function () {
      flash = t("sent");
      if (navigator.onLine !== false) { refreshCases(); }
    }
  });
  var lastState = sync.state();
  var flash = null;

  function setMessage(text) {
    flash = text;
    $("sync-message").textContent = text;
  }

  function problemText(problem) {
    if (!problem) { return ""; }
    var slug = problem.type ? problem.type.split("/").pop() : "";
    var head = MESSAGES["tablet.p_" + slug] ? t("p_" + slug) : t("p_other", { status: problem.status });
    var parts = [head];
    if (problem.detail) { parts.push(problem.detail); }
    (problem.errors || []).forEach(function (e) { parts.push(e.field + ": " + e.message); });
    return parts.join(" — ");
  }

  function renderOutbox(state) {
    var list = $("outbox-list");
    list.textContent = "";
    if (!state.entries.length) { list.appendChild(el("li", { className: "empty", text: t("outbox_empty") })); return; }
    state.entries.forEach(function (entry) {
      var mine = entry.user_id === settings.user.id;
      var label = !mine ? t("state_other_user", { user: entry.username })
        : entry.state === "attention" ? t("state_attention") : t("state_pending");
      var item = el("li", { className: "entry entry-" + entry.state, "data-uuid": entry.uuid, "data-state": entry.state }, [
        el("strong", { text: (entry.display && entry.display.category) || entry.report.category }),
        el("span", { className: "entry-state", text: label }),
        el("p", { text: t("sent_at", { t: formatTime(entry.report.captured_at) }) + " · " + t("photo_count", { n: (entry.photos || []).length }) }),
        entry.report.description ? el("p", { className: "entry-note", text: entry.report.description }) : null
      ]);
      if (entry.state === "attention") {
        item.appendChild(el("p", { className: "problem", text: problemText(entry.problem) }));
        var retry = el("button", { type: "button", className: "button", text: t("retry") });
        retry.addEventListener("click", function () { sync.retry(entry.uuid); });
        var discard = el("button", { type: "button", className: "button danger", text: t("discard") });
        discard.addEventListener("click", function () {
          if (window.confirm(t("discard_confirm"))) { sync.discard(entry.uuid); }
        });
        item.appendChild(el("div", { className: "row" }, [retry, discard]));
      }
      list.appendChild(item);
    });
  }

  function render(state) {
    lastState = state;
    $("outbox-count").textContent = String(state.total);
    $("outbox-count").dataset.count = String(state.total);
    $("tab-outbox-count").textContent = String(state.total);
    var attention = $("attention-count");
    attention.hidden = !state.attention;
    attention.textContent = state.attention ? t("attention_count", { n: state.attention }) : "";
    $("last-sync").textContent = state.lastSync ? formatTime(state.lastSync) : t("never");
    if (state.lastSync) { $("last-sync").dataset.at = state.lastSync; }
    var net = $("net-state");
    net.textContent = state.online ? t("online") : t("offline");
    net.dataset.online = String(state.online);
    $("sign-in-again").hidden = state.paused !== "session";
    var message = state.paused === "session" ? t("session_ended")
      : state.message === "syncing" ? t("syncing")
        : state.message === "retry" ? t("sync_retry") : flash;
    $("sync-message").textContent = message || "";
    renderOutbox(state);
  }

  function sessionOver() {
    sync.paused = "session";
    sync.message = "session";
    render(sync.state());
  }

  $("sync-now").addEventListener("click", function () { flash = null; sync.failures = 0; sync.kick(); });
  window.addEventListener("online", function () { render(sync.state()); });
  window.addEventListener("offline", function () { render(sync.state()); });

  // Signing out with unsent reports asks first; the reports stay on the device either way.
  var logout = $("logout");
  if (logout && logout.form) {
    logout.form.addEventListener("submit", function (e) {
      var n = lastState.total;
      if (n > 0 && !window.confirm(t("logout_confirm", { n: n }))) {
        e.preventDefault();
        return;
      }
      // The next user of a shared tablet must not get this one's cached page and data.
      if (window.caches) {
        e.preventDefault();
        var form = logout.form;
        Promise.all([caches.delete(settings.caches.pages), caches.delete(settings.caches.api)])
          .catch(function () {})
          .then(function () { HTMLFormElement.prototype.submit.call(form); });
      }
    });
  }

  // -- the service worker ---------------------------------------------------------------------

  // Registered after the data is shown (its install downloads the static files, which must
  // not compete with the first load). A page loaded before the worker controlled it warms the
  // caches itself, so that the next load works offline.
  function registerServiceWorker() {
    if (!("serviceWorker" in navigator) || !window.caches) { return Promise.resolve(false); }
    var controlled = !!navigator.serviceWorker.controller;
    return navigator.serviceWorker.register(settings.service_worker, { scope: location.pathname })
      .then(function () { return navigator.serviceWorker.ready; })
      .then(function () {
        if (controlled) { return true; }
        var page = location.pathname + location.search;
        var apis = Object.keys(API).map(function (k) { return API[k]; });
        return Promise.all([
          caches.open(settings.caches.pages).then(function (c) { return c.add(page); }),
          caches.open(settings.caches.api).then(function (c) { return c.addAll(apis); })
        ]).then(function () { return true; });
      })
      .catch(function () { return false; });
  }

  // -- start --------------------------------------------------------------------------------------

  render(lastState);
  sync.start();
  loadData().then(registerServiceWorker).then(function (ok) {
    if (ok) { document.body.dataset.offlineReady = "1"; }
  });
})();
