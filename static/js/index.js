// Landing map: Foshan with no basemap (tablets may be offline); layers come from the API.
(function () {
  "use strict";
  var map = L.map("map", { maxZoom: 19 }).setView([23.02, 113.12], 10);
  L.control.scale({ imperial: false }).addTo(map);
  window.gridopsMap = map;
})();
