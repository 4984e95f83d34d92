//! envoy-configs: being written
