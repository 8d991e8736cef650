/* The KPI dashboard: Chart.js charts and their data tables from GET /api/v1/kpis.

   Rows come as the API gives them. Narrowed to an area, the per-period figures are the sums
   of that area's groups (counts add up across areas; rates are recomputed from the sums, as
   the API defines them: closed / due, closed on time / due). Overdue-open is a backlog, not
   a flow: per group it is the last period's. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("kpi-config").textContent);
  var msg = JSON.parse(document.getElementById("kpi-messages").textContent);
  var locale = config.lang === "zh" ? "zh-CN" : "en";
  var status = document.getElementById("kpi-status");
  var COUNTS = ["reported", "filed", "closed", "due", "closed_on_time"];
  var COLUMNS = COUNTS.concat(["closure_rate", "on_time_rate", "overdue_open"]);
  var AREA_LEVELS = { district: 6, town: 9, community: 12 };

  function t(key) { return msg["planner.kpi." + key] || key; }

  function rate(numerator, denominator) {
    return denominator ? Math.round((numerator / denominator) * 10000) / 10000 : null;
  }

  function number(value) { return value === null || value === undefined ? "—" : value.toLocaleString(locale); }

  function percent(value) {
    return value === null || value === undefined ? "—" : (value * 100).toFixed(1) + "%";
  }

  function prefixOf(code) {
    // A city's districts share its first four digits (440600 -> 4406).
    return code.length === 6 && code.slice(4) === "00" ? code.slice(0, 4) : code;
  }

  function fetchRows(by) {
    var query = new URLSearchParams({ period: config.period, start: config.start, end: config.end });
    if (by) { query.set("by", by); }
    return fetch(config.api + "?" + query.toString(), {
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    }).then(function (response) {
      if (!response.ok) {
        return response.json().catch(function () { return {}; }).then(function (problem) {
          throw new Error(problem.detail || response.status + " " + response.statusText);
        });
      }
      return response.json();
    }).then(function (body) { return body.rows; });
  }

  function inArea(row) {
    return !config.area || (row.group !== null && row.group.indexOf(prefixOf(config.area)) === 0);
  }

  function withRates(row) {
    row.closure_rate = rate(row.closed, row.due);
    row.on_time_rate = rate(row.closed_on_time, row.due);
    return row;
  }

  /* One row per period: the API's own rows, or the sums of the area's groups. */
  function periodRows(rows, summed) {
    if (!summed) { return rows; }
    var byBucket = {};
    var order = [];
    rows.filter(inArea).forEach(function (row) {
      var sum = byBucket[row.bucket];
      if (!sum) {
        sum = byBucket[row.bucket] = { bucket: row.bucket, from: row.from, to: row.to, overdue_open: 0 };
        COUNTS.forEach(function (c) { sum[c] = 0; });
        order.push(row.bucket);
      }
      COUNTS.forEach(function (c) { sum[c] += row[c]; });
      sum.overdue_open += row.overdue_open;
    });
    order.sort();
    return order.map(function (bucket) { return withRates(byBucket[bucket]); });
  }

  /* One row per group over the whole range. */
  function groupRows(rows, filter) {
    var byGroup = {};
    var order = [];
    rows.filter(function (row) { return !filter || inArea(row); }).forEach(function (row) {
      var key = row.group === null ? "" : row.group;
      var sum = byGroup[key];
      if (!sum) {
        sum = byGroup[key] = {
          group: row.group,
          group_name: row.group_name,
          last_bucket: "",
          overdue_open: 0
        };
        COUNTS.forEach(function (c) { sum[c] = 0; });
        order.push(key);
      }
      COUNTS.forEach(function (c) { sum[c] += row[c]; });
      if (row.bucket >= sum.last_bucket) {
        sum.last_bucket = row.bucket;
        sum.overdue_open = row.overdue_open;
      }
    });
    return order.map(function (key) { return withRates(byGroup[key]); })
      .sort(function (a, b) { return b.reported - a.reported || String(a.group).localeCompare(String(b.group)); });
  }

  function groupLabel(row) {
    if (row.group === null) { return t("none"); }
    return row.group_name ? row.group_name + " " + row.group : row.group;
  }

  function fillTable(id, firstColumn, rows, label) {
    var table = document.getElementById(id);
    var head = table.tHead;
    var body = table.tBodies[0];
    head.textContent = "";
    body.textContent = "";
    var tr = head.insertRow();
    [firstColumn].concat(COLUMNS).forEach(function (column) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = t("col." + column);
      tr.appendChild(th);
    });
    rows.forEach(function (row) {
      var line = body.insertRow();
      line.dataset.key = firstColumn === "bucket" ? row.bucket : (row.group || "");
      var th = document.createElement("th");
      th.scope = "row";
      th.textContent = label(row);
      line.appendChild(th);
      COLUMNS.forEach(function (column) {
        var cell = line.insertCell();
        cell.dataset.column = column;
        cell.textContent = column.slice(-5) === "_rate" ? percent(row[column]) : number(row[column]);
      });
    });
    if (!rows.length) {
      var empty = body.insertRow().insertCell();
      empty.colSpan = COLUMNS.length + 1;
      empty.textContent = t("empty");
    }
  }

  var PALETTE = { reported: "#4e79a7", filed: "#f28e2b", closed: "#2e7d32", closure: "#0b4f8a", ontime: "#c2185b" };

  function percentAxis(fromZero) {
    // Rates sit near 100 %: from zero the months look alike, so the period chart zooms in.
    var axis = { max: 1, ticks: { callback: function (v) { return (v * 100).toFixed(0) + "%"; } } };
    if (fromZero) { axis.min = 0; }
    return axis;
  }

  function draw(id, options) {
    var canvas = document.getElementById(id);
    var old = window.Chart.getChart(canvas);
    if (old) { old.destroy(); }
    options.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { position: "bottom" } } }, options.options || {});
    return new window.Chart(canvas, options);
  }

  function render(periods, groups) {
    var labels = periods.map(function (row) { return row.bucket; });
    draw("chart-rates", {
      type: "line",
      data: {
        labels: labels,
        datasets: [
          { label: t("col.closure_rate"), data: periods.map(function (r) { return r.closure_rate; }),
            borderColor: PALETTE.closure, backgroundColor: PALETTE.closure, spanGaps: true },
          { label: t("col.on_time_rate"), data: periods.map(function (r) { return r.on_time_rate; }),
            borderColor: PALETTE.ontime, backgroundColor: PALETTE.ontime, spanGaps: true }
        ]
      },
      options: {
        scales: { y: percentAxis(false) },
        plugins: { tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + percent(c.raw); } } } }
      }
    });
    draw("chart-counts", {
      type: "bar",
      data: {
        labels: labels,
        datasets: ["reported", "filed", "closed"].map(function (column) {
          return { label: t("col." + column), data: periods.map(function (r) { return r[column]; }),
            backgroundColor: PALETTE[column] };
        })
      },
      options: { scales: { y: { beginAtZero: true } } }
    });
    var top = groups.slice(0, 20); // the table lists every group
    draw("chart-groups", {
      type: "bar",
      data: {
        labels: top.map(groupLabel),
        datasets: [
          { label: t("col.reported"), data: top.map(function (r) { return r.reported; }),
            backgroundColor: PALETTE.reported, yAxisID: "y" },
          { label: t("col.closed"), data: top.map(function (r) { return r.closed; }),
            backgroundColor: PALETTE.closed, yAxisID: "y" },
          { type: "line", label: t("col.closure_rate"), data: top.map(function (r) { return r.closure_rate; }),
            borderColor: PALETTE.closure, backgroundColor: PALETTE.closure, yAxisID: "rate" }
        ]
      },
      options: { scales: { y: { beginAtZero: true, position: "left" },
        rate: Object.assign(percentAxis(true), { position: "right", grid: { drawOnChartArea: false } }) } }
    });
    fillTable("table-periods", "bucket", periods, function (row) { return row.bucket; });
    fillTable("table-groups", "group", groups, groupLabel);
  }

  function summary(periods) {
    var total = { reported: 0, closed: 0, due: 0, closed_on_time: 0 };
    periods.forEach(function (row) { Object.keys(total).forEach(function (k) { total[k] += row[k]; }); });
    return t("summary")
      .replace("{from}", config.start).replace("{to}", config.end)
      .replace("{reported}", number(total.reported)).replace("{closed}", number(total.closed))
      .replace("{closure}", percent(rate(total.closed, total.due)))
      .replace("{ontime}", percent(rate(total.closed_on_time, total.due)));
  }

  function load() {
    var summed = Boolean(config.area);
    var seriesBy = summed ? config.seriesBy : null;
    var asks = [fetchRows(seriesBy)];
    if (config.by !== seriesBy) { asks.push(fetchRows(config.by)); }
    Promise.all(asks).then(function (answers) {
      var groupSource = answers[answers.length - 1];
      var periods = periodRows(answers[0], summed);
      var groups = groupRows(groupSource, summed && AREA_LEVELS[config.by] !== undefined);
      render(periods, groups);
      status.textContent = summary(periods);
      status.classList.remove("failed");
      document.body.setAttribute("data-loaded", "kpi-dashboard");
    }).catch(function (error) {
      status.textContent = t("failed") + ": " + error.message;
      status.classList.add("failed");
      document.body.setAttribute("data-loaded", "kpi-dashboard-failed");
    });
  }

  load();
})();
