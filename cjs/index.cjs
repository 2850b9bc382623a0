'use strict';
// require('rargen'): rargen is written as an ES module (dist/lib/index.js). Node >= 20.19
// (and >= 22.12) load it synchronously through require(esm); an older Node cannot, and
// gets a message saying what to do instead of ERR_REQUIRE_ESM.
try {
  module.exports = require('../dist/lib/index.js');
} catch (e) {
  if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
    throw new Error(
      `rargen is an ES module and Node ${process.version} cannot require() it: use import { ... } from 'rargen' ` +
        "(or await import('rargen') from CommonJS), or Node >= 20.19",
    );
  }
  throw e;
}
