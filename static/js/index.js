// Landing map: Foshan's districts and towns from the API, no basemap (tablets may be offline).
(function () {
  "use strict";
  var map = L.map("map", { maxZoom: 19 }).setView([23.02, 113.12], 10);
  L.control.scale({ imperial: false }).addTo(map);
  window.gridopsMap = map;

  function addLayer(url, style) {
    return fetch(url, { headers: { Accept: "application/geo+json" } })
      .then(function (r) { return r.ok ? r.json() : { features: [] }; })
      .then(function (data) {
        var layer = L.geoJSON(data, {
          style: style,
          onEachFeature: function (f, l) {
            // Text, never HTML: a string given to Leaflet is set as HTML.
            var tip = document.createElement("span");
            tip.textContent = f.properties.name + " " + f.properties.code;
            l.bindTooltip(tip);
          }
        }).addTo(map);
        return layer;
      });
  }

  addLayer("/api/v1/areas?level=district&limit=1000", { color: "#0b4f8a", weight: 2, fillOpacity: 0.05 })
    .then(function (districts) {
      if (districts.getLayers().length) { map.fitBounds(districts.getBounds()); }
      document.body.dataset.loaded = String(districts.getLayers().length);
      return addLayer("/api/v1/areas?level=town&limit=1000", { color: "#2a7", weight: 1, fill: false });
    });
})();
