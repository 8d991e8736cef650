#!/bin/sh
# Copy the front-end libraries installed by `npm ci` from node_modules/ into static/vendor/
# (served by the app itself: never a CDN). Used by the Makefile and the Dockerfile.
set -eu
cd "$(dirname "$0")/.."
rm -rf static/vendor
mkdir -p static/vendor/idb static/vendor/chart.js static/vendor/axe-core static/vendor/jquery \
    static/vendor/workbox
cp -r node_modules/leaflet/dist static/vendor/leaflet
cp -r node_modules/leaflet.markercluster/dist static/vendor/leaflet.markercluster
cp -r node_modules/leaflet.vectorgrid/dist static/vendor/leaflet.vectorgrid
cp node_modules/idb/build/umd.js static/vendor/idb/idb.umd.js
cp node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.js/
cp node_modules/axe-core/axe.min.js static/vendor/axe-core/
cp node_modules/jquery/dist/jquery.min.js static/vendor/jquery/
cp node_modules/workbox-*/build/*.js static/vendor/workbox/
