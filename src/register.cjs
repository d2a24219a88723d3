// `--require poolscope/register` (or require() of it), the form other agents document. The preload is an ES
// module with top-level await, which require() cannot load: the application died with ERR_REQUIRE_ASYNC_MODULE
// (ERR_REQUIRE_ESM on Node 20) before its first line. It now runs, uninstrumented, after one line saying why.
'use strict';
try {
  require('node:fs').writeSync(2, 'poolscope: it is loaded with --import poolscope/register, not --require (or require()); ' +
    'Poolscope is not running in this process.\n');
} catch {
  // stderr closed: nothing to tell, and nothing to break.
}
