// The tablet page's service worker (served at /sw.js by gridops/web/tablet.py, which puts
// self.GRIDOPS_SW in front of this file: the precache manifest, cache names and page URL).
// - The page's static files are precached (Workbox, revisioned by content hash).
// - The page itself and the GET API data it shows: network first, the cached copy when the
//   network fails (or is too slow), so that after one online visit the page works offline.
// - Reports are POSTs and never pass through here: the page's IndexedDB outbox sends them.
/* global importScripts, workbox */
"use strict";

var config = self.GRIDOPS_SW;
importScripts(config.workbox + "workbox-sw.js");
workbox.setConfig({ modulePathPrefix: config.workbox, debug: false });

// Workbox loads its modules with importScripts, which only works while the worker's script
// is first evaluated: touch them all now, not later in an event handler.
var core = workbox.core;
var precaching = workbox.precaching;
var routing = workbox.routing;
var strategies = workbox.strategies;

core.setCacheNameDetails({ prefix: "gridops-tablet" });
self.skipWaiting();
core.clientsClaim();

precaching.cleanupOutdatedCaches();
precaching.precacheAndRoute(config.precache);

// Only whole, first-hand answers are kept: no redirect (to /login when the session ended),
// no error, no opaque response.
var okOnly = {
  cacheWillUpdate: function (args) {
    var r = args.response;
    return Promise.resolve(r && r.status === 200 && r.type === "basic" && !r.redirected ? r : null);
  }
};

// The data the tablet page reads (GET only; writes go through the outbox).
var API_PATHS = /^\/api\/v1\/(grids|enterprises|outlets|cases|inspections\/tasks|categories)$/;

routing.registerRoute(
  function (o) { return o.request.mode === "navigate" && o.url.pathname === config.page; },
  new strategies.NetworkFirst({
    cacheName: config.caches.pages,
    networkTimeoutSeconds: 6,
    plugins: [okOnly],
    matchOptions: { ignoreVary: true }
  })
);

routing.registerRoute(
  function (o) {
    return o.request.method === "GET" && o.url.origin === self.location.origin &&
      API_PATHS.test(o.url.pathname);
  },
  new strategies.NetworkFirst({
    cacheName: config.caches.api,
    networkTimeoutSeconds: 6,
    plugins: [okOnly],
    matchOptions: { ignoreVary: true }
  })
);
