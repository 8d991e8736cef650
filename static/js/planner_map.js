/* The hotspot map's pickers: typing a date switches the period to "custom". The map itself
   is folium's script; this file only helps the form (which works without it). */
(function () {
  "use strict";
  var preset = document.getElementById("pick-preset");
  ["pick-start", "pick-end"].forEach(function (id) {
    var input = document.getElementById(id);
    if (!input || !preset) { return; }
    input.addEventListener("change", function () { preset.value = "custom"; });
  });
  document.body.setAttribute("data-loaded", "planner-map");
})();
