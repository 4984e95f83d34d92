// Stand-in for the proxy-wasm host's `env` import module when meshkit's pure-code tests run on
// wasm32-unknown-unknown under node (tests/wasm32.rs). The proxy-wasm SDK's exported
// `proxy_on_*` entry points keep its `env.proxy_*` imports in the test module even though no
// test calls them; every import here throws, so a test that reached the host would fail loudly.
"use strict";
module.exports = new Proxy(
  {},
  {
    get(_target, name) {
      return () => {
        throw new Error(`proxy-wasm hostcall env.${String(name)} is not available in node tests`);
      };
    },
  },
);
